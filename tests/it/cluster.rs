//! `quern cluster`, `quern sql --cluster`, `quern build --cluster` (issue 17): a localhost
//! Ballista cluster (a scheduler and two executors, child processes of the `quern` binary
//! on free loopback ports) gives what the local commands give.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A scheduler and its executors; killed when dropped.
struct Cluster {
    addr: String,
    scheduler: Child,
    executors: Vec<Child>,
    work: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self
            .executors
            .iter_mut()
            .chain(std::iter::once(&mut self.scheduler))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what} did not open port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Cluster {
    /// Starts a scheduler (on a port it picks) and `executors` executors with `slots` task
    /// slots each and the extra environment `env`.
    fn start(executors: usize, slots: usize, env: &[(&str, &str)]) -> Cluster {
        let mut scheduler = quern()
            .args(["cluster", "scheduler", "--bind", "127.0.0.1:0"])
            .args(["--executor-timeout", "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(scheduler.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("quern cluster scheduler listening on ")
            .unwrap_or_else(|| panic!("scheduler said {line:?}"))
            .to_string();
        let mut c = Cluster {
            addr,
            scheduler,
            executors: Vec::new(),
            work: tempfile::tempdir().unwrap(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for _ in 0..executors {
            c.add_executor(slots);
        }
        c
    }

    fn add_executor(&mut self, slots: usize) {
        let (port, grpc) = (free_port(), free_port());
        let i = self.executors.len();
        let mut cmd = quern();
        cmd.args(["cluster", "executor", "--scheduler", &self.addr])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--grpc-port", &grpc.to_string()])
            .args(["--slots", &slots.to_string(), "--heartbeat", "1"])
            .arg("--work-dir")
            .arg(self.work_dir(i))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.executors.push(cmd.spawn().unwrap());
        wait_for_port(port, "an executor");
        wait_for_port(grpc, "an executor");
    }

    fn work_dir(&self, i: usize) -> PathBuf {
        self.work.path().join(format!("executor-{i}"))
    }
}

/// Inputs: the mixed corpus in `files` JSONL files, with a few unreadable records.
fn make_inputs(dir: &Path, files: usize) -> PathBuf {
    let docs = read_jsonl(&fixture("corpus/mixed.jsonl"));
    let input = dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    for (i, chunk) in docs.chunks(docs.len().div_ceil(files)).enumerate() {
        let mut f = std::fs::File::create(input.join(format!("part-{i:03}.jsonl"))).unwrap();
        for (j, d) in chunk.iter().enumerate() {
            writeln!(f, "{d}").unwrap();
            if j == 2 {
                writeln!(f, "{{\"text\": \"unterminated").unwrap();
            }
        }
    }
    input
}

/// Map stages from three crates: rewriting (normalize, pii), signals and drops, labels and
/// the split (a function of each row's id).
const MAP_STAGES: &str = r#"
[[stages]]
type = "normalize"

[[stages]]
type = "gopher_quality"

[[stages]]
type = "language"

[[stages]]
type = "pii"

[[stages]]
type = "rules"
labels = [{ name = "tech", keywords = ["software", "computer", "data"] }]

[[stages]]
type = "split"
"#;

fn sql(corpus: &Path, cluster: Option<&str>, query: &str) -> String {
    let mut cmd = quern();
    // Four partitions: each query's stages have tasks for both executors.
    cmd.arg("sql").arg("--corpus").arg(corpus).args([
        "--partitions",
        "4",
        "--format",
        "json",
        query,
    ]);
    if let Some(c) = cluster {
        cmd.args(["--cluster", c]);
    }
    String::from_utf8(run_ok(&mut cmd).stdout).unwrap()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> usize {
    if !dir.exists() {
        return 0;
    }
    tree(dir).len()
}

#[test]
fn sql_on_a_cluster_gives_the_local_rows() {
    let dir = tempfile::tempdir().unwrap();
    make_inputs(dir.path(), 4);
    let p = pipeline_file(dir.path(), "p.toml", 40, MAP_STAGES);
    run_ok(quern().arg("build").arg(&p));
    let corpus = dir.path().join("out-p.toml");
    let cluster = Cluster::start(2, 1, &[]);

    // quern's functions from every crate, in projections, filters, aggregates and a join,
    // over the listing tables, the (empty) in-memory tables and a shuffle.
    let queries = [
        "SELECT id, word_count(text) AS w, gopher_quality(text) AS g, detect_lang(text) AS l, \
         cardinality(minhash(text)) AS m, quern_split(id) AS s, pii_count(text) AS p \
         FROM docs ORDER BY id",
        "SELECT quern_split(id) AS s, count(*) AS n, sum(char_count(text)) AS c \
         FROM docs WHERE gopher_repetition(text) IS NULL GROUP BY 1 ORDER BY 1",
        "SELECT a.id, b.id AS other, round(jaccard(a.text, b.text), 6) AS j FROM docs a \
         JOIN docs b ON xxh3(a.source) = xxh3(b.source) AND a.id < b.id \
         WHERE jaccard(a.text, b.text) > 0.2 ORDER BY 1, 2",
        "SELECT rejected_by, reason, count(*) AS n FROM rejected GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT count(*) AS n FROM quarantine",
        "SELECT count(*) AS n FROM tokens",
        "SELECT * FROM token_splits",
    ];
    for q in queries {
        let local = sql(&corpus, None, q);
        let remote = sql(&corpus, Some(&cluster.addr), q);
        assert!(
            !local.is_empty() || q.contains("token_splits"),
            "{q}: no rows"
        );
        assert_eq!(
            local, remote,
            "{q}: the cluster's rows differ from the local ones"
        );
    }
    // The shuffle ran on both executors: each wrote shuffle files to its work directory.
    for i in 0..2 {
        assert!(
            files_under(&cluster.work_dir(i)) > 0,
            "executor {i} ran no task"
        );
    }
    // A function the nodes do not know is the user's error, named as such.
    let mut cmd = quern();
    cmd.arg("sql").arg("--corpus").arg(&corpus).args([
        "--cluster",
        &cluster.addr,
        "SELECT no_such_fn(text) FROM docs",
    ]);
    let err = run_err(&mut cmd);
    assert!(err.contains("no_such_fn"), "{err}");
}

#[test]
fn build_on_a_cluster_equals_the_local_build() {
    let dir = tempfile::tempdir().unwrap();
    make_inputs(dir.path(), 6);
    let local = pipeline_file(dir.path(), "local.toml", 40, MAP_STAGES);
    let remote = pipeline_file(dir.path(), "remote.toml", 40, MAP_STAGES);
    run_ok(quern().arg("build").arg(&local));
    let cluster = Cluster::start(2, 1, &[]);
    let out = run_ok(
        quern()
            .arg("build")
            .arg(&remote)
            .args(["--cluster", &cluster.addr]),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("total"));
    let (lo, ro) = (
        dir.path().join("out-local.toml"),
        dir.path().join("out-remote.toml"),
    );
    assert_same_tree(&lo, &ro);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ro.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["complete"], true);
    assert!(m["accounting"]["rejected"].as_u64().unwrap() > 0, "{m}");
    assert!(m["accounting"]["quarantined"].as_u64().unwrap() >= 6, "{m}");
    // Run again: the complete build is left as it is.
    let again = run_ok(
        quern()
            .arg("build")
            .arg(&remote)
            .args(["--cluster", &cluster.addr]),
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds this complete build"));

    // Global stages are not distributed yet: refused by name before anything is written.
    for (ty, stages) in [
        ("exact_dedup", "[[stages]]\ntype = \"gopher_quality\"\n\n[[stages]]\ntype = \"exact_dedup\"\n"),
        ("minhash_dedup", "[[stages]]\ntype = \"minhash_dedup\"\n"),
        (
            "split",
            "[[stages]]\ntype = \"rules\"\nlabels = [{ name = \"tech\", keywords = [\"data\"] }]\n\n\
             [[stages]]\ntype = \"split\"\nstratify_by = \"rules\"\n",
        ),
    ] {
        let p = pipeline_file(dir.path(), &format!("{ty}.toml"), 40, stages);
        let err = run_err(quern().arg("build").arg(&p).args(["--cluster", &cluster.addr]));
        assert!(
            err.contains(&format!("cannot run stage `{ty}`")),
            "{ty}: {err}"
        );
        assert!(!dir.path().join(format!("out-{ty}.toml")).exists());
    }
}

#[test]
fn an_unreachable_scheduler_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    make_inputs(dir.path(), 2);
    let p = pipeline_file(dir.path(), "p.toml", 40, MAP_STAGES);
    run_ok(quern().arg("build").arg(&p));
    let nobody = format!("127.0.0.1:{}", free_port());
    let err = run_err(
        quern()
            .arg("sql")
            .arg("--corpus")
            .arg(dir.path().join("out-p.toml"))
            .args(["--cluster", &nobody, "SELECT count(*) FROM docs"]),
    );
    assert!(
        err.contains(&format!("cannot reach the Ballista scheduler at {nobody}")),
        "{err}"
    );
    let q = pipeline_file(dir.path(), "q.toml", 40, MAP_STAGES);
    let err = run_err(quern().arg("build").arg(&q).args(["--cluster", &nobody]));
    assert!(err.contains("cannot reach the Ballista scheduler"), "{err}");
    assert!(!dir.path().join("out-q.toml").exists(), "nothing written");
    let err = run_err(
        quern()
            .args(["sql", "--corpus"])
            .arg(dir.path().join("out-p.toml"))
            .args(["--cluster", "nohost", "SELECT 1"]),
    );
    assert!(err.contains("expected HOST:PORT"), "{err}");
}

/// An executor SIGKILLed while it runs units: the build either finishes on the other one or
/// fails; a failed build leaves an incomplete manifest whose every shard is whole, and the
/// same command resumes it. Either way the output equals the local build's.
#[test]
fn a_killed_executor_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    make_inputs(dir.path(), 6);
    let local = pipeline_file(dir.path(), "local.toml", 40, MAP_STAGES);
    let remote = pipeline_file(dir.path(), "remote.toml", 40, MAP_STAGES);
    run_ok(quern().arg("build").arg(&local));
    // Each unit stays on its executor for 800 ms after writing its shards.
    let mut cluster = Cluster::start(2, 1, &[("QUERN_TEST_UNIT_DELAY_MS", "800")]);
    let ro = dir.path().join("out-remote.toml");
    let mut build = quern()
        .arg("build")
        .arg(&remote)
        .args(["--cluster", &cluster.addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the first executor as soon as some unit has written a shard: a unit is then in
    // its 800 ms window on one of them.
    let t = Instant::now();
    while files_under(&ro.join("docs")) == 0 {
        assert!(build.try_wait().unwrap().is_none(), "the build ended early");
        assert!(t.elapsed() < Duration::from_secs(60), "no shard appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.executors[0].kill().unwrap();
    cluster.executors[0].wait().unwrap();
    let status = build.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut build.stderr.take().unwrap(), &mut stderr).unwrap();
    let lo = dir.path().join("out-local.toml");
    if !status.success() {
        eprintln!("the build failed after the kill: {stderr}");
        assert!(stderr.contains("resumes"), "{stderr}");
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(ro.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["complete"], false);
        for unit in m["units"].as_object().unwrap().values() {
            for shards in unit["tables"].as_object().unwrap().values() {
                for s in shards.as_array().unwrap() {
                    let f = ro.join(s["file"].as_str().unwrap());
                    assert!(f.is_file(), "{} listed but missing", f.display());
                }
            }
        }
        cluster.add_executor(1);
        run_ok(
            quern()
                .arg("build")
                .arg(&remote)
                .args(["--cluster", &cluster.addr]),
        );
    } else {
        eprintln!("the build finished on the surviving executor");
    }
    assert_same_tree(&lo, &ro);
}
