//! Turning the command line's inputs (files, globs, folders) into a list of files.
//!
//! The list must be deterministic, because output shard names and document ids derive from
//! each file's position and name: inputs are expanded, sorted and de-duplicated (the same
//! file named twice, even spelled differently, is read once). Folders are walked
//! recursively and contribute the files whose extension names a format quern reads; hidden
//! files and folders (names starting with `.`) are skipped. A named file is taken whatever
//! its extension (`--format` can say what it is). An input that matches nothing is an error
//! naming it, never silently an empty run.

use std::collections::HashSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use quern_core::error::IoContext;
use quern_core::{Error, Result};

use crate::options::Format;

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = Vec::new();
    for e in fs::read_dir(dir).at(dir)? {
        entries.push(e.at(dir)?.path());
    }
    entries.sort();
    for p in entries {
        if is_hidden(&p) {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else if Format::from_path(&p).is_some() {
            out.push(p);
        }
    }
    Ok(())
}

/// Expands files, globs (`data/**/*.jsonl`) and folders (recursively) into a sorted,
/// de-duplicated list of files. An input that does not exist, a glob that matches nothing,
/// or a folder without a readable file is an error naming that input.
pub fn expand_inputs(inputs: &[String]) -> Result<Vec<PathBuf>> {
    if inputs.is_empty() {
        return Err(Error::usage(
            "no inputs given; name at least one file, folder or glob",
        ));
    }
    let mut all: Vec<PathBuf> = Vec::new();
    for input in inputs {
        let before = all.len();
        let is_glob = input.contains(['*', '?', '[']) && !Path::new(input).exists();
        if is_glob {
            let paths = glob::glob(input)
                .map_err(|e| Error::usage(format!("input `{input}` is not a valid glob: {e}")))?;
            for p in paths {
                let p = p.map_err(|e| Error::io(e.path(), std::io::Error::other(e.to_string())))?;
                if p.is_dir() {
                    walk(&p, &mut all)?;
                } else {
                    all.push(p);
                }
            }
            if all.len() == before {
                return Err(Error::usage(format!(
                    "input glob `{input}` matches no files"
                )));
            }
        } else {
            let p = PathBuf::from(input);
            let meta = fs::metadata(&p).map_err(|e| {
                Error::usage(format!(
                    "input `{input}` cannot be read ({e}); check the path"
                ))
            })?;
            if meta.is_dir() {
                walk(&p, &mut all)?;
                if all.len() == before {
                    return Err(Error::usage(format!(
                        "input folder `{input}` holds no file quern can read (.jsonl, .ndjson, .json, .parquet, .csv, .tsv, .txt, .md, optionally .gz/.zst)"
                    )));
                }
            } else {
                all.push(p);
            }
        }
    }
    all.sort();
    let mut seen = HashSet::new();
    all.retain(|p| seen.insert(fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    Ok(all)
}

/// Names for `files` that are unique within the list and independent of the working
/// directory: each file's path relative to the deepest folder holding all of them, with `/`
/// separators (a single file is named by its file name). Two `part.jsonl` in different
/// folders stay apart (`a/part.jsonl`, `b/part.jsonl`). Generated document ids start with
/// these names.
pub fn relative_names(files: &[PathBuf]) -> Vec<String> {
    let abs: Vec<PathBuf> = files
        .iter()
        .map(|p| fs::canonicalize(p).unwrap_or_else(|_| absolute(p)))
        .collect();
    let mut root: Option<PathBuf> = None;
    for p in &abs {
        let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
        root = Some(match root {
            None => parent,
            Some(r) => common_prefix(&r, &parent),
        });
    }
    let root = root.unwrap_or_default();
    abs.iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap_or(p);
            rel.components()
                .filter_map(|c| match c {
                    Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect()
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn common_prefix(a: &Path, b: &Path) -> PathBuf {
    a.components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"{}\n").unwrap();
    }

    #[test]
    fn folders_globs_and_files_expand_sorted_and_deduplicated() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in [
            "a/x.jsonl",
            "a/sub/y.txt",
            "a/.hidden.jsonl",
            "a/skip.bin",
            "b/x.jsonl",
            "c.csv",
        ] {
            touch(&r.join(f));
        }
        let s = |p: &str| r.join(p).to_string_lossy().into_owned();
        let got =
            expand_inputs(&[s("b"), s("a"), s("*.csv"), s("a/x.jsonl"), s("a/skip.bin")]).unwrap();
        let rel: Vec<String> = got
            .iter()
            .map(|p| p.strip_prefix(r).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            rel,
            [
                "a/skip.bin",
                "a/sub/y.txt",
                "a/x.jsonl",
                "b/x.jsonl",
                "c.csv"
            ]
        );
        assert_eq!(
            relative_names(&got),
            [
                "a/skip.bin",
                "a/sub/y.txt",
                "a/x.jsonl",
                "b/x.jsonl",
                "c.csv"
            ]
        );
        assert_eq!(relative_names(&got[2..3]), ["x.jsonl"]);
    }

    #[test]
    fn inputs_matching_nothing_are_named_in_the_error() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope.jsonl").to_string_lossy().into_owned();
        let e = expand_inputs(std::slice::from_ref(&missing))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&missing), "{e}");
        let glob = d.path().join("*.jsonl").to_string_lossy().into_owned();
        let e = expand_inputs(std::slice::from_ref(&glob))
            .unwrap_err()
            .to_string();
        assert!(e.contains("matches no files") && e.contains(&glob), "{e}");
        fs::create_dir(d.path().join("empty")).unwrap();
        let e = expand_inputs(&[d.path().join("empty").to_string_lossy().into_owned()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no file"), "{e}");
        assert!(expand_inputs(&[]).is_err());
    }
}
