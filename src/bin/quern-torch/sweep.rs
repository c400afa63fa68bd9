//! `quern sweep`: the libtorch side (the arguments are `quern::cmd::sweep::Args`).
//!
//! 1. Read `sweep.toml` and the base `run.toml` as TOML tables.
//! 2. Check every swept value alone against the base with the trainer's own parser
//!    ([`TrainConfig::from_toml`]), so an unknown key or a value of the wrong type is refused
//!    naming the sweep file and the key; then build and check every trial's whole
//!    configuration. Nothing is written before all of this passes.
//! 3. Run the trials in order, each as `quern-torch train --quiet --resume
//!    out_dir/trial-NNN/run.toml` (output in `trial-NNN/train.log`). A trial whose
//!    `report.json` exists (the trainer writes it atomically at the very end) is finished
//!    and not run again; an unfinished one resumes from its newest checkpoint, or starts
//!    over when it has none.
//! 4. After each trial, write `sweep.json` and `sweep.csv` atomically; at the end print the
//!    trials ranked by best validation loss (`report.json`'s `best.val_loss`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use quern_core::shard::write_atomic;
use quern_train::{TrainConfig, TrainReport};
use serde::Deserialize;
use serde_json::json;
use toml::{Table, Value};

pub use quern::cmd::sweep::Args;

/// The sweep file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    /// The run.toml every trial starts from (against the sweep file's directory).
    base: PathBuf,
    /// Where the trials and results go (against the sweep file's directory).
    out_dir: PathBuf,
    /// `grid` (every combination of the lists) or `random` (`trials` draws). Default grid.
    #[serde(default)]
    strategy: Strategy,
    /// Random search: how many trials. Required there, refused for a grid.
    #[serde(default)]
    trials: Option<usize>,
    /// Random search: the seed of the draws. Default 0.
    #[serde(default)]
    seed: Option<u64>,
    /// run.toml keys (dotted: "optim.lr") and their values or distributions.
    params: Table,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Strategy {
    #[default]
    Grid,
    Random,
}

/// What one swept key takes.
#[derive(Debug, Clone, PartialEq)]
enum Spec {
    /// Grid: these values in turn. Random: one of them, uniformly.
    List(Vec<Value>),
    LogUniform(f64, f64),
    Uniform(f64, f64),
    /// Integers in [lo, hi], both included.
    Int(i64, i64),
}

const DISTRIBUTIONS: [&str; 4] = ["log_uniform", "uniform", "int", "choice"];

/// Keys whose values are paths: relative ones resolve against the file that holds them.
const PATH_KEYS: [&str; 3] = ["data.train", "data.val", "init.from"];

/// One trial: its values (in the order of `[params]`) and its run.toml.
#[derive(Debug, Clone)]
struct Trial {
    name: String,
    values: Vec<(String, Value)>,
    toml: String,
}

/// A trial's outcome.
#[derive(Debug, Clone)]
enum Outcome {
    Pending,
    Done(Box<TrainReport>),
    Failed(String),
}

pub fn run(args: Args) -> Result<ExitCode> {
    let sweep_path = &args.config;
    let text = std::fs::read_to_string(sweep_path)
        .with_context(|| format!("reading {}", sweep_path.display()))?;
    let file: SweepFile =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", sweep_path.display()))?;
    let sweep_dir = absolute(sweep_path.parent().unwrap_or(Path::new("")))?;
    let out_dir = sweep_dir.join(&file.out_dir);
    let base_path = sweep_dir.join(&file.base);
    let base_text = std::fs::read_to_string(&base_path).with_context(|| {
        format!(
            "reading {} (`base` in {})",
            base_path.display(),
            sweep_path.display()
        )
    })?;
    let mut base: Table = toml::from_str(&base_text)
        .map_err(|e| anyhow!("{}: not valid TOML: {e}", base_path.display()))?;
    let base_dir = base_path.parent().unwrap_or(Path::new("")).to_path_buf();
    for key in PATH_KEYS {
        if let Some(v) = get_key(&base, key) {
            let v = resolve_path(key, v, &base_dir)
                .map_err(|e| anyhow!("{}: {e}", base_path.display()))?;
            set_key(&mut base, key, v).map_err(|e| anyhow!("{}: {e}", base_path.display()))?;
        }
    }
    base.insert("out_dir".into(), Value::String(".".into()));
    let base_cfg = TrainConfig::from_toml(&toml::to_string(&base)?)
        .map_err(|e| anyhow!("{}: {e}", base_path.display()))?;
    if base_cfg.data.val.is_none() {
        bail!(
            "{}: the sweep ranks trials by validation loss, and the base run has no data.val \
             (in {}): set it",
            sweep_path.display(),
            base_path.display()
        );
    }

    let specs = read_params(&file, sweep_path, &sweep_dir)?;
    // Each value alone against the base, so an error names the key that caused it.
    for (key, spec) in &specs {
        for v in candidates(spec) {
            let mut t = base.clone();
            set_key(&mut t, key, v.clone())
                .map_err(|e| anyhow!("{}: params.\"{key}\": {e}", sweep_path.display()))?;
            TrainConfig::from_toml(&toml::to_string(&t)?).map_err(|e| {
                anyhow!(
                    "{}: params.\"{key}\" = {}: refused by the run configuration: {e}",
                    sweep_path.display(),
                    show(&v)
                )
            })?;
        }
    }
    let trials = make_trials(&file, &specs, &base, sweep_path)?;

    if args.check {
        let keys: Vec<&str> = specs.iter().map(|(k, _)| k.as_str()).collect();
        let outcomes = vec![Outcome::Pending; trials.len()];
        print_table(&keys, &trials, &outcomes);
        println!(
            "{} trials checked; nothing run or written (out_dir {})",
            trials.len(),
            out_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    claim(&out_dir, &trials, args.force)?;
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let keys: Vec<&str> = specs.iter().map(|(k, _)| k.as_str()).collect();
    let exe = std::env::current_exe().context("finding the quern-torch binary")?;
    let mut outcomes = vec![Outcome::Pending; trials.len()];
    let mut ran = 0;
    for (i, trial) in trials.iter().enumerate() {
        let dir = out_dir.join(&trial.name);
        if let Some(r) = finished(&dir)? {
            outcomes[i] = Outcome::Done(Box::new(r));
            continue;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&dir.join("run.toml"), trial.toml.as_bytes())?;
        let settings: Vec<String> = trial
            .values
            .iter()
            .map(|(k, v)| format!("{k}={}", show(v)))
            .collect();
        eprintln!(
            "sweep: {} ({}/{}) {}",
            trial.name,
            i + 1,
            trials.len(),
            settings.join(" ")
        );
        let t0 = Instant::now();
        outcomes[i] = run_trial(&exe, &dir)?;
        ran += 1;
        match &outcomes[i] {
            Outcome::Done(r) => eprintln!(
                "sweep: {} finished in {:.1} s: best val loss {}",
                trial.name,
                t0.elapsed().as_secs_f64(),
                r.best
                    .map(|b| format!("{:.4} at step {}", b.val_loss, b.step))
                    .unwrap_or_else(|| "none".into())
            ),
            Outcome::Failed(e) => eprintln!("sweep: {} failed: {e}", trial.name),
            Outcome::Pending => {}
        }
        write_results(
            sweep_path, &base_path, &file, &out_dir, &keys, &trials, &outcomes,
        )?;
    }
    let json = write_results(
        sweep_path, &base_path, &file, &out_dir, &keys, &trials, &outcomes,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_table(&keys, &trials, &outcomes);
        println!(
            "{} trials: {ran} run now, {} already finished; results {}",
            trials.len(),
            trials.len() - ran,
            out_dir.join("sweep.json").display()
        );
    }
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Failed(_)))
        .count();
    if failed > 0 {
        bail!(
            "{failed} of {} trials failed (their errors are in sweep.json and trial-*/train.log); \
             run the sweep again to retry them",
            trials.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `path` made absolute against the current directory, without touching the file system.
fn absolute(path: &Path) -> Result<PathBuf> {
    let p = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// A path value of `key` resolved against `dir` when relative.
fn resolve_path(key: &str, v: Value, dir: &Path) -> std::result::Result<Value, String> {
    match v {
        Value::String(s) => {
            let p = Path::new(&s);
            let p = if p.is_relative() {
                dir.join(p)
            } else {
                p.to_path_buf()
            };
            let p = absolute(&p).map_err(|e| format!("{key}: {e}"))?;
            p.to_str()
                .map(|s| Value::String(s.to_string()))
                .ok_or_else(|| format!("{key}: the path {} is not UTF-8", p.display()))
        }
        other => Ok(other),
    }
}

/// The value at a dotted key, if any.
fn get_key(table: &Table, key: &str) -> Option<Value> {
    let mut parts = key.split('.').peekable();
    let mut t = table;
    while let Some(p) = parts.next() {
        let v = t.get(p)?;
        if parts.peek().is_none() {
            return Some(v.clone());
        }
        t = v.as_table()?;
    }
    None
}

/// Sets a dotted key, creating the tables on its way.
fn set_key(table: &mut Table, key: &str, value: Value) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{key}` is not a key (an empty part between dots)"));
    }
    let (last, parents) = parts.split_last().ok_or("an empty key")?;
    let mut t = table;
    for (i, p) in parents.iter().enumerate() {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        t = entry.as_table_mut().ok_or_else(|| {
            format!(
                "`{}` is a value in the base run.toml, not a table",
                parts[..=i].join(".")
            )
        })?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

/// `[params]` flattened to dotted keys (`"optim.lr" = ...` and `optim.lr = ...` alike) and
/// read as specs for the strategy.
fn read_params(file: &SweepFile, sweep: &Path, sweep_dir: &Path) -> Result<Vec<(String, Spec)>> {
    fn flatten(prefix: &str, t: &Table, out: &mut Vec<(String, Value)>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                Value::Table(inner)
                    if !(inner.len() == 1
                        && inner.keys().all(|k| DISTRIBUTIONS.contains(&k.as_str()))) =>
                {
                    flatten(&key, inner, out)
                }
                _ => out.push((key, v.clone())),
            }
        }
    }
    let mut flat = Vec::new();
    flatten("", &file.params, &mut flat);
    if flat.is_empty() {
        bail!(
            "{}: [params] is empty: name at least one run.toml key to sweep",
            sweep.display()
        );
    }
    let mut specs = Vec::new();
    for (key, v) in flat {
        let err = |msg: String| anyhow!("{}: params.\"{key}\": {msg}", sweep.display());
        if key == "out_dir" {
            return Err(err(
                "out_dir is set by the sweep (each trial runs in out_dir/trial-NNN)".into(),
            ));
        }
        if specs.iter().any(|(k, _)| k == &key) {
            return Err(err("given twice".into()));
        }
        let mut spec = parse_spec(&v, file.strategy).map_err(err)?;
        if PATH_KEYS.contains(&key.as_str()) {
            if let Spec::List(vals) = &mut spec {
                for v in vals.iter_mut() {
                    *v = resolve_path(&key, v.clone(), sweep_dir).map_err(err)?;
                }
            }
        }
        specs.push((key, spec));
    }
    // Alphabetical, whatever order the TOML table keeps: the grid's order and the random
    // draws depend on it.
    specs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(specs)
}

/// One `[params]` entry as a spec.
fn parse_spec(v: &Value, strategy: Strategy) -> std::result::Result<Spec, String> {
    let number = |x: &Value| match x {
        Value::Float(f) => Some(*f),
        Value::Integer(i) => Some(*i as f64),
        _ => None,
    };
    match v {
        Value::Array(vals) if vals.is_empty() => {
            Err("an empty list: give at least one value".into())
        }
        Value::Array(vals) => Ok(Spec::List(vals.clone())),
        Value::Table(t) => {
            let (name, arg) = t.iter().next().ok_or("an empty table")?;
            if strategy == Strategy::Grid {
                return Err(format!(
                    "`{name}` is a distribution, for strategy = \"random\"; a grid takes a list of values"
                ));
            }
            let pair = |what: &str| -> std::result::Result<(f64, f64), String> {
                match arg.as_array().map(|a| a.as_slice()) {
                    Some([a, b]) => match (number(a), number(b)) {
                        (Some(a), Some(b)) if a.is_finite() && b.is_finite() && a <= b => {
                            Ok((a, b))
                        }
                        (Some(_), Some(_)) => Err(format!(
                            "{name} = [{a}, {b}]: the bounds must be finite, low <= high"
                        )),
                        _ => Err(format!("{name} takes two numbers [{what}], got {arg}")),
                    },
                    _ => Err(format!("{name} takes two numbers [{what}], got {arg}")),
                }
            };
            match name.as_str() {
                "log_uniform" => {
                    let (a, b) = pair("low, high")?;
                    if a <= 0.0 {
                        return Err(format!("log_uniform needs a positive low bound, got {a}"));
                    }
                    Ok(Spec::LogUniform(a, b))
                }
                "uniform" => {
                    let (a, b) = pair("low, high")?;
                    Ok(Spec::Uniform(a, b))
                }
                "int" => match arg.as_array().map(|a| a.as_slice()) {
                    Some([Value::Integer(a), Value::Integer(b)]) if a <= b => Ok(Spec::Int(*a, *b)),
                    _ => Err(format!(
                        "int takes two integers [low, high], low <= high, got {arg}"
                    )),
                },
                "choice" => match arg {
                    Value::Array(a) if !a.is_empty() => Ok(Spec::List(a.clone())),
                    _ => Err(format!("choice takes a non-empty list, got {arg}")),
                },
                other => Err(format!("unknown distribution `{other}`")),
            }
        }
        other => Err(format!(
            "expected a list of values{}, got {other}",
            if strategy == Strategy::Random {
                " or a distribution ({ log_uniform = [a, b] }, { uniform = [a, b] }, { int = [lo, hi] }, { choice = [...] })"
            } else {
                ""
            }
        )),
    }
}

/// The values that stand for a spec when it is checked alone: every listed value, or a
/// range's two ends.
fn candidates(spec: &Spec) -> Vec<Value> {
    match spec {
        Spec::List(v) => v.clone(),
        Spec::LogUniform(a, b) | Spec::Uniform(a, b) => vec![Value::Float(*a), Value::Float(*b)],
        Spec::Int(a, b) => vec![Value::Integer(*a), Value::Integer(*b)],
    }
}

/// splitmix64: a small seeded generator whose draws are the same on every platform and
/// version (the sweep's trials are part of its results).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A float drawn from a range, rounded to 4 significant digits (readable in tables and
/// run.toml files) and kept within the range.
fn round4(x: f64, lo: f64, hi: f64) -> f64 {
    let r: f64 = format!("{x:.3e}").parse().unwrap_or(x);
    r.clamp(lo, hi)
}

/// Draws one value of a spec.
fn draw(spec: &Spec, rng: &mut Rng) -> Value {
    match spec {
        Spec::List(v) => {
            let i = ((rng.unit() * v.len() as f64) as usize).min(v.len() - 1);
            v[i].clone()
        }
        Spec::Uniform(a, b) => Value::Float(round4(a + rng.unit() * (b - a), *a, *b)),
        Spec::LogUniform(a, b) => {
            let x = (a.ln() + rng.unit() * (b.ln() - a.ln())).exp();
            Value::Float(round4(x, *a, *b))
        }
        Spec::Int(a, b) => {
            let span = (*b as i128 - *a as i128 + 1) as u128;
            let off = (rng.next_u64() as u128) % span;
            Value::Integer((*a as i128 + off as i128) as i64)
        }
    }
}

/// Every trial's values and run.toml, each checked whole by the trainer's parser.
fn make_trials(
    file: &SweepFile,
    specs: &[(String, Spec)],
    base: &Table,
    sweep: &Path,
) -> Result<Vec<Trial>> {
    let combos: Vec<Vec<Value>> = match file.strategy {
        Strategy::Grid => {
            if file.trials.is_some() || file.seed.is_some() {
                bail!(
                    "{}: `trials` and `seed` are for strategy = \"random\"; a grid runs every \
                     combination of the lists",
                    sweep.display()
                );
            }
            let mut combos: Vec<Vec<Value>> = vec![Vec::new()];
            for (_, spec) in specs {
                let Spec::List(vals) = spec else {
                    bail!("internal error: a grid with a distribution");
                };
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        vals.iter().map(move |v| {
                            let mut c = c.clone();
                            c.push(v.clone());
                            c
                        })
                    })
                    .collect();
            }
            combos
        }
        Strategy::Random => {
            let n = file.trials.ok_or_else(|| {
                anyhow!(
                    "{}: trials: strategy = \"random\" needs the number of trials",
                    sweep.display()
                )
            })?;
            if n == 0 {
                bail!("{}: trials: must be at least 1", sweep.display());
            }
            let mut rng = Rng(file.seed.unwrap_or(0));
            (0..n)
                .map(|_| specs.iter().map(|(_, s)| draw(s, &mut rng)).collect())
                .collect()
        }
    };
    const MAX_TRIALS: usize = 10_000;
    if combos.len() > MAX_TRIALS {
        bail!(
            "{}: {} trials; at most {MAX_TRIALS}: use fewer values or strategy = \"random\"",
            sweep.display(),
            combos.len()
        );
    }
    let mut trials = Vec::new();
    for (i, combo) in combos.into_iter().enumerate() {
        let name = format!("trial-{i:03}");
        let mut t = base.clone();
        let values: Vec<(String, Value)> =
            specs.iter().map(|(k, _)| k.clone()).zip(combo).collect();
        for (k, v) in &values {
            set_key(&mut t, k, v.clone())
                .map_err(|e| anyhow!("{}: params.\"{k}\": {e}", sweep.display()))?;
        }
        let text = format!(
            "# {name}: written by quern sweep (its values are in the sweep's sweep.json)\n{}",
            toml::to_string(&t)?
        );
        let cfg = TrainConfig::from_toml(&text).map_err(|e| {
            let set: Vec<String> = values
                .iter()
                .map(|(k, v)| format!("{k} = {}", show(v)))
                .collect();
            anyhow!(
                "{}: {name} ({}) is refused by the run configuration: {e}",
                sweep.display(),
                set.join(", ")
            )
        })?;
        if cfg.data.val.is_none() {
            bail!(
                "{}: {name}: no data.val; the sweep ranks trials by validation loss",
                sweep.display()
            );
        }
        trials.push(Trial {
            name,
            values,
            toml: text,
        });
    }
    Ok(trials)
}

/// Checks `out_dir` before anything runs: trials already there must be this sweep's (same
/// run.toml), or `force` deletes them.
fn claim(out_dir: &Path, trials: &[Trial], force: bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out_dir) else {
        return Ok(());
    };
    let mut foreign = Vec::new();
    let mut ours = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("listing {}", out_dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("trial-") {
            continue;
        }
        ours.push(e.path());
        let same = trials.iter().find(|t| t.name == name).is_some_and(|t| {
            std::fs::read_to_string(e.path().join("run.toml")).is_ok_and(|s| s == t.toml)
        });
        if !same {
            foreign.push(name);
        }
    }
    if force {
        for p in ours {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        for f in ["sweep.json", "sweep.csv"] {
            let p = out_dir.join(f);
            if p.exists() {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        return Ok(());
    }
    if !foreign.is_empty() {
        foreign.sort();
        bail!(
            "{} holds trials of another sweep ({}: their run.toml differs from this sweep's); \
             choose another out_dir, or pass --force to delete them and run every trial again",
            out_dir.display(),
            foreign.join(", ")
        );
    }
    Ok(())
}

/// The report of a finished trial (the trainer writes `report.json` atomically, last).
fn finished(dir: &Path) -> Result<Option<TrainReport>> {
    let path = dir.join("report.json");
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let r = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a training report", path.display()))?;
    Ok(Some(r))
}

/// Runs one trial to its end: `quern-torch train --quiet --resume run.toml`, output in
/// `train.log`.
fn run_trial(exe: &Path, dir: &Path) -> Result<Outcome> {
    let log_path = dir.join("train.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let err_log = log
        .try_clone()
        .with_context(|| format!("opening {}", log_path.display()))?;
    let status = std::process::Command::new(exe)
        .args(["train", "--quiet", "--resume"])
        .arg(dir.join("run.toml"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .status()
        .with_context(|| format!("running {}", exe.display()))?;
    if status.success() {
        return Ok(match finished(dir)? {
            Some(r) => Outcome::Done(Box::new(r)),
            None => Outcome::Failed("the run ended without writing report.json".into()),
        });
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let from = lines
        .iter()
        .position(|l| l.starts_with("error:"))
        .unwrap_or(lines.len().saturating_sub(5));
    let mut msg = lines[from..].join("\n").trim().to_string();
    if msg.is_empty() {
        msg = format!("quern train exited with {status}");
    }
    Ok(Outcome::Failed(msg))
}

/// A value as the table shows it.
fn show(v: &Value) -> String {
    match v {
        Value::Float(f) => {
            let a = f.abs();
            if a != 0.0 && !(1e-3..1e6).contains(&a) {
                format!("{f:e}")
            } else {
                format!("{f}")
            }
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Trial indices ranked: finished by best validation loss (ties by trial), then finished
/// without one, then failed and pending, each in trial order.
fn ranking(outcomes: &[Outcome]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..outcomes.len()).collect();
    let key = |i: usize| match &outcomes[i] {
        Outcome::Done(r) => match r.best {
            Some(b) if b.val_loss.is_finite() => (0, b.val_loss),
            _ => (1, 0.0),
        },
        Outcome::Failed(_) => (2, 0.0),
        Outcome::Pending => (3, 0.0),
    };
    idx.sort_by(|&a, &b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(a.cmp(&b))
    });
    idx
}

fn status(o: &Outcome) -> &'static str {
    match o {
        Outcome::Pending => "pending",
        Outcome::Done(_) => "ok",
        Outcome::Failed(_) => "failed",
    }
}

/// One row's figures: best val loss, its step, tokens/s.
fn figures(o: &Outcome) -> [String; 3] {
    match o {
        Outcome::Done(r) => [
            r.best
                .map(|b| format!("{:.4}", b.val_loss))
                .unwrap_or_else(|| "-".into()),
            r.best
                .map(|b| b.step.to_string())
                .unwrap_or_else(|| "-".into()),
            format!("{:.0}", r.tokens_per_s),
        ],
        _ => ["-".into(), "-".into(), "-".into()],
    }
}

fn print_table(keys: &[&str], trials: &[Trial], outcomes: &[Outcome]) {
    let mut header: Vec<String> = vec!["rank".into(), "trial".into()];
    header.extend(keys.iter().map(|k| k.to_string()));
    header.extend(
        ["best val loss", "best step", "tokens/s", "status"]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut rows = vec![header];
    for (rank, i) in ranking(outcomes).into_iter().enumerate() {
        let mut row = vec![(rank + 1).to_string(), trials[i].name.clone()];
        row.extend(trials[i].values.iter().map(|(_, v)| show(v)));
        row.extend(figures(&outcomes[i]));
        row.push(status(&outcomes[i]).into());
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
        }
        println!("{}", line.trim_end());
    }
}

/// `sweep.json` and `sweep.csv`, both written atomically; returns the JSON.
fn write_results(
    sweep: &Path,
    base: &Path,
    file: &SweepFile,
    out_dir: &Path,
    keys: &[&str],
    trials: &[Trial],
    outcomes: &[Outcome],
) -> Result<serde_json::Value> {
    let order = ranking(outcomes);
    let mut rank = vec![0; trials.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r + 1;
    }
    let rows: Vec<serde_json::Value> = trials
        .iter()
        .zip(outcomes)
        .enumerate()
        .map(|(i, (t, o))| {
            let params: serde_json::Map<String, serde_json::Value> = t
                .values
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                .collect();
            let mut row = json!({
                "trial": t.name,
                "rank": rank[i],
                "dir": out_dir.join(&t.name),
                "params": params,
                "status": status(o),
            });
            match o {
                Outcome::Done(r) => {
                    row["best_val_loss"] = json!(r.best.map(|b| b.val_loss));
                    row["best_step"] = json!(r.best.map(|b| b.step));
                    row["final_val_loss"] = json!(r.evals.last().map(|e| e.val_loss));
                    row["steps"] = json!(r.steps);
                    row["stopped_early"] = json!(r.stopped_early);
                    row["tokens_per_s"] = json!(r.tokens_per_s);
                    row["elapsed_s"] = json!(r.elapsed_s);
                }
                Outcome::Failed(e) => row["error"] = json!(e),
                Outcome::Pending => {}
            }
            row
        })
        .collect();
    let json = json!({
        "sweep": sweep,
        "base": base,
        "strategy": match file.strategy { Strategy::Grid => "grid", Strategy::Random => "random" },
        "seed": file.seed,
        "metric": "best validation loss (report.json best.val_loss), lower is better",
        "params": keys,
        "ranking": order.iter().map(|&i| trials[i].name.clone()).collect::<Vec<_>>(),
        "trials": rows,
    });
    write_atomic(
        &out_dir.join("sweep.json"),
        &serde_json::to_vec_pretty(&json)?,
    )?;
    let mut csv = String::new();
    let mut header = vec!["rank".to_string(), "trial".into()];
    header.extend(keys.iter().map(|k| k.to_string()));
    header.extend(
        [
            "best_val_loss",
            "best_step",
            "final_val_loss",
            "steps",
            "tokens_per_s",
            "elapsed_s",
            "status",
            "error",
        ]
        .map(String::from),
    );
    csv.push_str(&csv_line(&header));
    for &i in &order {
        let mut row = vec![rank[i].to_string(), trials[i].name.clone()];
        row.extend(trials[i].values.iter().map(|(_, v)| match v {
            Value::Float(f) => f.to_string(),
            v => show(v),
        }));
        let opt = |x: Option<String>| x.unwrap_or_default();
        match &outcomes[i] {
            Outcome::Done(r) => row.extend([
                opt(r.best.map(|b| b.val_loss.to_string())),
                opt(r.best.map(|b| b.step.to_string())),
                opt(r.evals.last().map(|e| e.val_loss.to_string())),
                r.steps.to_string(),
                r.tokens_per_s.to_string(),
                r.elapsed_s.to_string(),
                "ok".into(),
                String::new(),
            ]),
            o => {
                row.extend(std::iter::repeat_n(String::new(), 6));
                row.push(status(o).into());
                row.push(match o {
                    Outcome::Failed(e) => e.clone(),
                    _ => String::new(),
                });
            }
        }
        csv.push_str(&csv_line(&row));
    }
    write_atomic(&out_dir.join("sweep.csv"), csv.as_bytes())?;
    Ok(json)
}

/// One CSV record (RFC 4180 quoting).
fn csv_line(cells: &[String]) -> String {
    let quoted: Vec<String> = cells
        .iter()
        .map(|c| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        })
        .collect();
    format!("{}\n", quoted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn specs_by_strategy() {
        let t = table(
            "a = [1, 2]\nb = { log_uniform = [1e-5, 1e-3] }\nc = { int = [1, 4] }\n\
             d = { choice = [\"x\"] }\ne = 3\nf = []\ng = { log_uniform = [0.0, 1.0] }\n\
             h = { int = [5, 1] }\ni = { gauss = [0, 1] }",
        );
        let g = Strategy::Grid;
        let r = Strategy::Random;
        assert_eq!(
            parse_spec(&t["a"], g),
            Ok(Spec::List(vec![Value::Integer(1), Value::Integer(2)]))
        );
        assert!(parse_spec(&t["b"], g).unwrap_err().contains("random"));
        assert_eq!(parse_spec(&t["b"], r), Ok(Spec::LogUniform(1e-5, 1e-3)));
        assert_eq!(parse_spec(&t["c"], r), Ok(Spec::Int(1, 4)));
        assert_eq!(
            parse_spec(&t["d"], r),
            Ok(Spec::List(vec![Value::String("x".into())]))
        );
        assert!(parse_spec(&t["e"], r).unwrap_err().contains("log_uniform"));
        assert!(parse_spec(&t["f"], g).unwrap_err().contains("empty"));
        assert!(parse_spec(&t["g"], r).unwrap_err().contains("positive"));
        assert!(parse_spec(&t["h"], r).unwrap_err().contains("low <= high"));
        assert!(parse_spec(&t["i"], r).unwrap_err().contains("gauss"));
    }

    #[test]
    fn draws_stay_in_range_and_repeat_with_the_seed() {
        let specs = [
            Spec::LogUniform(1e-5, 1e-3),
            Spec::Uniform(-1.0, 2.0),
            Spec::Int(3, 5),
        ];
        let draws = |seed| {
            let mut rng = Rng(seed);
            (0..200)
                .map(|_| specs.iter().map(|s| draw(s, &mut rng)).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7));
        assert_ne!(a, draws(8));
        let mut ints = std::collections::BTreeSet::new();
        for row in &a {
            let lr = row[0].as_float().unwrap();
            assert!((1e-5..=1e-3).contains(&lr), "{lr}");
            let u = row[1].as_float().unwrap();
            assert!((-1.0..=2.0).contains(&u), "{u}");
            ints.insert(row[2].as_integer().unwrap());
        }
        assert_eq!(ints.into_iter().collect::<Vec<_>>(), [3, 4, 5]);
        // Log-uniform: about half the draws below the geometric mean 1e-4.
        let below = a.iter().filter(|r| r[0].as_float().unwrap() < 1e-4).count();
        assert!((60..140).contains(&below), "{below} of 200 below 1e-4");
    }

    #[test]
    fn dotted_keys_are_set_and_read() {
        let mut t = table("[optim]\nlr = 1.0\n");
        set_key(&mut t, "optim.lr", Value::Float(2.0)).unwrap();
        set_key(&mut t, "lora.rank", Value::Integer(4)).unwrap();
        assert_eq!(get_key(&t, "optim.lr"), Some(Value::Float(2.0)));
        assert_eq!(get_key(&t, "lora.rank"), Some(Value::Integer(4)));
        assert!(set_key(&mut t, "optim.lr.x", Value::Integer(1))
            .unwrap_err()
            .contains("optim.lr"));
        assert!(set_key(&mut t, "optim..lr", Value::Integer(1)).is_err());
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let line = csv_line(&["a".into(), "b,c".into(), "say \"x\"\nthen".into()]);
        assert_eq!(line, "a,\"b,c\",\"say \"\"x\"\"\nthen\"\n");
    }
}
