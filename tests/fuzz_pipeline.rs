//! Pipeline fuzzing: seeded mutations of valid pipelines (the repository's pipelines/*.yaml
//! and a few small ones) — keys deleted, duplicated and retyped, values swapped, random
//! unicode, deep nesting, huge numbers, bad `${...}` references, invalid matrix values,
//! truncation at a random byte — go to `cbound validate`, and those that validate to
//! `cbound plan`. None may panic (exit 101, "panicked", killed by a signal) or hang (each
//! run has a deadline), and every error of a failed validate carries `FILE:LINE:COL`.
//! CI runs 300 mutations; `CBOUND_FUZZ=full` 1,500.

mod common;
use common::Project;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const SMALL: &[&str] = &[
    "name: small\nseed: 3\nstages:\n  d:\n    kind: synthetic\n    params: {task: dense, dim: 2, n: 300}\n  mi:\n    kind: estimate_mi\n    inputs: d\n    params:\n      pairs: [{name: xy, x: {columns: 'x*'}, y: {columns: 'y*'}, estimators: [{name: ksg}]}]\n",
    "name: swept\nvars: {n: 200, dim: 3}\nstages:\n  d:\n    kind: synthetic\n    params: {task: dense, dim: '${dim}', n: '${n}'}\n    matrix: {n: [100, 200], dim: [2, 4]}\n  l:\n    kind: load\n    inputs: d\n    params: {format: parquet, feature_columns: 'x*'}\n",
    "name: loader\nstages:\n  a:\n    kind: load\n    params: {format: npy, path: x.npy, labels_path: y.npy, limit: 10, classes: [0, 1]}\n  b:\n    kind: augment\n    inputs: a\n    params: {views: [[], [{op: gaussian_noise, std: 0.1}]], epochs: 1}\n",
];

const VALUES: &[&str] = &[
    "[1, 2]",
    "{a: 1}",
    "\"text\"",
    "true",
    "null",
    "~",
    "-1",
    "0",
    "1e400",
    "-1e400",
    ".nan",
    "99999999999999999999999999999",
    "18446744073709551616",
    "'${nope}'",
    "'${a.b.c}'",
    "'${'",
    "'${}'",
    "'${n}${n}${dim}'",
    "'$${n}'",
    "'${n'",
    "&a [*a]",
    "*undefined",
    "!!binary aGVsbG8=",
    "!custom 3",
    "|\n  block",
    "'日本語🙂\u{202e}'",
    "\"\\u0000\"",
    "[]",
    "{}",
    "''",
];

const MATRICES: &[&str] = &[
    "matrix: {n: []}",
    "matrix: {n: [1, \"a\", null]}",
    "matrix: 5",
    "matrix: [1, 2]",
    "matrix: {params.n: [1, 2]}",
    "matrix: {nope.deep.key: [1, 2]}",
    "matrix: {n: [{a: 1}, [1]]}",
    "matrix: {a: [1,2,3,4,5,6,7,8,9,10], b: [1,2,3,4,5,6,7,8,9,10], c: [1,2,3,4,5,6,7,8,9,10], d: [1,2,3,4,5,6,7,8,9,10], e: [1,2,3,4,5,6,7,8,9,10]}",
    "matrix: {'': [1]}",
    "matrix: {n: '${n}'}",
];

const UNICODE: &[char] = &[
    'é', '日', '🙂', '\u{202e}', '\u{200b}', '\u{feff}', '\u{0}', '\t', '\u{7f}', '\u{85}',
    '\u{2028}', 'ﬁ', '\u{301}', '"', '\'', ':', '#', '{', '}', '[', ']', '&', '*', '!', '|', '>',
    '%', '@', '`', '\\', '-', '?',
];

fn mutate(seed: &str, rng: &mut impl Rng) -> Vec<u8> {
    let lines: Vec<&str> = seed.lines().collect();
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let pick = |rng: &mut dyn rand::RngCore, n: usize| (rng.next_u32() as usize) % n.max(1);
    let value_at = |line: &str| line.find(": ").map(|i| i + 2);
    let kind = rng.random_range(0..13);
    match kind {
        // A line (a key) deleted.
        0 => {
            let i = pick(rng, out.len());
            out.remove(i);
        }
        // A line duplicated (a duplicate key, or a list item twice).
        1 => {
            let i = pick(rng, out.len());
            let l = out[i].clone();
            out.insert(i, l);
        }
        // A value retyped.
        2 => {
            for _ in 0..rng.random_range(1..4) {
                let i = pick(rng, out.len());
                if let Some(at) = value_at(&out[i]) {
                    let v = VALUES[pick(rng, VALUES.len())];
                    out[i] = format!("{}{v}", &out[i][..at]);
                }
            }
        }
        // Two values swapped.
        3 => {
            let with: Vec<usize> = (0..out.len())
                .filter(|&i| value_at(&out[i]).is_some())
                .collect();
            if with.len() >= 2 {
                let (a, b) = (with[pick(rng, with.len())], with[pick(rng, with.len())]);
                let (ka, va) = out[a].split_at(value_at(&out[a]).unwrap());
                let (kb, vb) = out[b].split_at(value_at(&out[b]).unwrap());
                let (na, nb) = (format!("{ka}{vb}"), format!("{kb}{va}"));
                out[a] = na;
                out[b] = nb;
            }
        }
        // Random unicode (and YAML indicators) inserted.
        4 => {
            let mut text = out.join("\n");
            for _ in 0..rng.random_range(1..6) {
                let mut at = pick(rng, text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.insert(at, UNICODE[pick(rng, UNICODE.len())]);
            }
            return text.into_bytes();
        }
        // Deep nesting as a value.
        5 => {
            let depth = [50, 500, 5_000, 100_000][pick(rng, 4)];
            let nested = if rng.random() {
                format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
            } else {
                format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth))
            };
            let i = pick(rng, out.len());
            match value_at(&out[i]) {
                Some(at) => out[i] = format!("{}{nested}", &out[i][..at]),
                None => out.push(format!("deep: {nested}")),
            }
        }
        // Huge numbers.
        6 => {
            let i = pick(rng, out.len());
            if let Some(at) = value_at(&out[i]) {
                let huge = [
                    "1e308",
                    "1e309",
                    "-9223372036854775809",
                    "340282366920938463463374607431768211456",
                    "0x7fffffffffffffff",
                    "1_000_000_000_000",
                ][pick(rng, 6)];
                out[i] = format!("{}{huge}", &out[i][..at]);
            }
        }
        // A bad `${...}` reference in a parameter.
        7 => {
            let refs = [
                "'${missing}'",
                "'${vars.x}'",
                "'${${n}}'",
                "'${n} and ${'",
                "'${ n }'",
                "'${n.0}'",
                "'${stages.d.params.n}'",
            ];
            let r = refs[pick(rng, refs.len())];
            let i = pick(rng, out.len());
            if let Some(at) = value_at(&out[i]) {
                out[i] = format!("{}{r}", &out[i][..at]);
            }
        }
        // An invalid matrix under a stage.
        8 => {
            let kinds: Vec<usize> = (0..out.len())
                .filter(|&i| out[i].trim_start().starts_with("kind:"))
                .collect();
            if !kinds.is_empty() {
                let i = kinds[pick(rng, kinds.len())];
                let indent = out[i].len() - out[i].trim_start().len();
                let m = MATRICES[pick(rng, MATRICES.len())];
                out.insert(i + 1, format!("{}{m}", " ".repeat(indent)));
            }
        }
        // Indentation broken.
        9 => {
            let i = pick(rng, out.len());
            out[i] = if rng.random() {
                format!(" {}", out[i])
            } else {
                out[i].trim_start().to_string()
            };
        }
        // A key renamed (typo) or retyped to a list/number.
        10 => {
            let i = pick(rng, out.len());
            if let Some(colon) = out[i].find(':') {
                let indent = out[i].len() - out[i].trim_start().len();
                let key = ["typo", "- item", "123", "'${n}'", "? complex", "<<", ""][pick(rng, 7)];
                out[i] = format!("{}{key}{}", " ".repeat(indent), &out[i][colon..]);
            }
        }
        // A top-level or stage key added with an odd value (repeat, gather, resources, ...).
        11 => {
            let keys = [
                "repeat",
                "gather",
                "matrix_mode",
                "resources",
                "executor",
                "inputs",
                "vars",
                "seed",
                "description",
                "params",
                "kind",
            ];
            let key = keys[pick(rng, keys.len())];
            let odd = [
                "3",
                "-2",
                "1000000000",
                "all",
                "product",
                "zip",
                "[a, b]",
                "{cpus: -1, memory: 12XB}",
                "{kind: slurm, max_parallel: 0}",
                "{kind: local, memory: '1e99G'}",
                "{time: '99:99:99'}",
                "[d, d, d]",
                "'${n}'",
                "{gpus: 1e400}",
            ];
            let v = if rng.random() {
                odd[pick(rng, odd.len())]
            } else {
                VALUES[pick(rng, VALUES.len())]
            };
            let kinds: Vec<usize> = (0..out.len())
                .filter(|&i| out[i].trim_start().starts_with("kind:"))
                .collect();
            if rng.random() || kinds.is_empty() {
                out.push(format!("{key}: {v}"));
            } else {
                let i = kinds[pick(rng, kinds.len())];
                let indent = out[i].len() - out[i].trim_start().len();
                out.insert(i + 1, format!("{}{key}: {v}", " ".repeat(indent)));
            }
        }
        // Truncation at a random byte (possibly inside a UTF-8 character).
        _ => {
            let mut bytes = seed.as_bytes().to_vec();
            bytes.truncate(rng.random_range(0..bytes.len()));
            return bytes;
        }
    }
    let mut text = out.join("\n");
    text.push('\n');
    text.into_bytes()
}

enum Outcome {
    Exited {
        code: Option<i32>,
        stderr: String,
        stdout: String,
    },
    Hung,
}

fn run_with_deadline(p: &Project, args: &[&str], limit: Duration) -> Outcome {
    let out_path = p.path().join("stdout.txt");
    let err_path = p.path().join("stderr.txt");
    let mut child = p
        .command(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn cbound");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Outcome::Exited {
                code: status.code(),
                stdout: String::from_utf8_lossy(&std::fs::read(&out_path).unwrap()).into_owned(),
                stderr: String::from_utf8_lossy(&std::fs::read(&err_path).unwrap()).into_owned(),
            };
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Outcome::Hung;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The error lines of a failed validate that carry no `FILE:LINE:COL` (or `(from --set)`).
fn unlocated(stderr: &str, file: &str) -> Vec<String> {
    let lines: Vec<&str> = stderr.lines().collect();
    let mut bad = Vec::new();
    let mut any = false;
    for (i, l) in lines.iter().enumerate() {
        if !l.starts_with("error:") {
            continue;
        }
        any = true;
        let located = lines.get(i + 1).is_some_and(|next| {
            next.trim_start()
                .strip_prefix("--> ")
                .and_then(|loc| loc.split_once(file))
                .is_some_and(|(_, rest)| {
                    let mut parts = rest.splitn(3, ':');
                    let (empty, line, col) = (parts.next(), parts.next(), parts.next());
                    empty == Some("")
                        && line
                            .is_some_and(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
                        && col.is_some_and(|s| {
                            let digits: String =
                                s.chars().take_while(|c| c.is_ascii_digit()).collect();
                            !digits.is_empty()
                        })
                })
        });
        if !located {
            bad.push(l.to_string());
        }
    }
    if !any {
        bad.push(format!("no `error:` line in: {stderr}"));
    }
    bad
}

/// The pipelines of tests/corpus/invalid: each breaks one rule `validate` must catch.
fn invalid_corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&f).unwrap())
        })
        .collect()
}

#[test]
fn every_invalid_corpus_pipeline_is_refused_with_located_errors() {
    let p = Project::new();
    let corpus = invalid_corpus();
    assert!(corpus.len() >= 8, "{} corpus files", corpus.len());
    for (name, text) in corpus {
        std::fs::write(p.path().join(&name), &text).unwrap();
        let run = p.cbound(&["validate", &name]);
        assert_eq!(run.code, 2, "{name} was not refused:\n{}", run.all());
        let bad = unlocated(&run.stderr, &name);
        assert!(bad.is_empty(), "{name}: unlocated {bad:?}\n{}", run.all());
        assert!(
            run.stderr.contains(&format!("{name}:")),
            "{name}: {}",
            run.all()
        );
    }
}

#[test]
fn mutated_pipelines_never_panic_or_hang_and_errors_are_located() {
    let p = Project::new();
    let full = std::env::var("CBOUND_FUZZ").is_ok_and(|v| v == "full");
    let count = if full { 1500 } else { 300 };
    let mut seeds: Vec<String> = SMALL.iter().map(|s| s.to_string()).collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        seeds.push(std::fs::read_to_string(f).unwrap());
    }
    // Known-bad pipelines (tests/corpus/invalid) are seeds too: their mutations probe the
    // validate-time rules from inside.
    seeds.extend(invalid_corpus().into_iter().map(|(_, text)| text));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let (mut valid, mut invalid, mut planned) = (0, 0, 0);
    let mut panics = Vec::new();
    let mut hangs = Vec::new();
    let mut unlocated_errors = Vec::new();
    let limit = Duration::from_secs(10);
    for i in 0..count {
        let seed = &seeds[i % seeds.len()];
        // One to three mutations stacked.
        let mut bytes = mutate(seed, &mut rng);
        for _ in 0..rng.random_range(0..3) {
            bytes = mutate(&String::from_utf8_lossy(&bytes), &mut rng);
        }
        let name = format!("f{i}.yaml");
        std::fs::write(p.path().join(&name), &bytes).unwrap();
        let shown = || {
            String::from_utf8_lossy(&bytes)
                .chars()
                .take(3000)
                .collect::<String>()
        };
        match run_with_deadline(&p, &["validate", &name], limit) {
            Outcome::Hung => hangs.push(format!("validate {name}:\n{}", shown())),
            Outcome::Exited {
                code,
                stderr,
                stdout,
            } => {
                if code == Some(101) || code.is_none() || stderr.contains("panicked") {
                    panics.push(format!("validate {name} ({code:?}): {stderr}\n{}", shown()));
                } else if code == Some(0) {
                    valid += 1;
                    match run_with_deadline(&p, &["plan", &name], limit) {
                        Outcome::Hung => hangs.push(format!("plan {name}:\n{}", shown())),
                        Outcome::Exited { code, stderr, .. } => {
                            planned += 1;
                            if code == Some(101) || code.is_none() || stderr.contains("panicked") {
                                panics
                                    .push(format!("plan {name} ({code:?}): {stderr}\n{}", shown()));
                            }
                        }
                    }
                } else {
                    invalid += 1;
                    let bad = unlocated(&stderr, &name);
                    if !bad.is_empty() {
                        unlocated_errors.push(format!(
                            "validate {name}: {bad:?}\n--- stdout\n{stdout}--- stderr\n{stderr}--- file\n{}",
                            shown()
                        ));
                    }
                }
            }
        }
        std::fs::remove_file(p.path().join(&name)).unwrap();
    }
    eprintln!(
        "mutated pipelines: {count} to `cbound validate` ({valid} valid, then `cbound plan`: {planned}; {invalid} refused), {} panics, {} hangs, {} unlocated errors",
        panics.len(),
        hangs.len(),
        unlocated_errors.len()
    );
    for f in panics
        .iter()
        .chain(&hangs)
        .chain(&unlocated_errors)
        .take(10)
    {
        eprintln!("=====\n{f}");
    }
    assert!(panics.is_empty() && hangs.is_empty() && unlocated_errors.is_empty());
    assert!(invalid > count / 3, "{invalid} of {count} refused");
}
