//! What differs between two runs, as one long table (`cbound diff`): the run's own record
//! (run.json: overrides, name, commit, version), the pipeline files they ran (key by key),
//! each shared instance's resolved parameters (`param.*`), instances only one run has, and
//! the show table's metric columns per configuration, with B - A. Equal values are left out.

use std::collections::BTreeMap;
use std::path::Path;

use super::load::{Cell, Run};
use super::show::{glob, Agg, Field, Grid, ShowError, ShowTable};

/// The columns of a diff table.
const HEADER: [&str; 6] = ["what", "where", "name", "a", "b", "delta"];

/// The differences between the runs at `a` and `b`; `patterns` selects the metric columns as
/// for `show` (the defaults when empty; a pattern must match a column of either run).
pub fn diff(a: &Path, b: &Path, patterns: &[String]) -> Result<Grid, ShowError> {
    let (ra, rb) = (Run::open(a)?, Run::open(b)?);
    let mut rows: Vec<Vec<Field>> = vec![];
    let mut push = |what: &str, place: &str, name: &str, x: Field, y: Field, d: Field| {
        rows.push(vec![
            Field::Text(what.into()),
            Field::Text(place.into()),
            Field::Text(name.into()),
            x,
            y,
            d,
        ]);
    };
    let text = |s: Option<String>| s.map_or(Field::Null, Field::Text);

    // The run's record: what was asked for and what it ran on.
    for key in [
        "name",
        "overrides",
        "git.commit",
        "git.dirty",
        "cbound_version",
        "executor",
    ] {
        let get = |m: &serde_json::Value| {
            let v = key.split('.').fold(m, |v, k| &v[k]);
            (!v.is_null()).then(|| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        let (x, y) = (get(&ra.meta), get(&rb.meta));
        if x != y {
            push("run", "run.json", key, text(x), text(y), Field::Null);
        }
    }

    // The pipeline files as run.
    let (pa, pb) = (flat_yaml(&ra.dir), flat_yaml(&rb.dir));
    let keys: std::collections::BTreeSet<&String> = pa.keys().chain(pb.keys()).collect();
    for k in keys {
        let (x, y) = (pa.get(k).cloned(), pb.get(k).cloned());
        if x != y {
            push(
                "pipeline",
                "pipeline.yaml",
                k,
                text(x),
                text(y),
                Field::Null,
            );
        }
    }

    // Each instance's parameters, and instances only one run has.
    let index = |r: &Run| -> BTreeMap<String, usize> {
        (0..r.results.len())
            .filter_map(|i| r.results.str(i, "instance").map(|s| (s.to_string(), i)))
            .collect()
    };
    let (ia, ib) = (index(&ra), index(&rb));
    let params = |r: &Run| -> Vec<String> {
        r.results
            .columns
            .iter()
            .filter(|c| c.starts_with("param."))
            .cloned()
            .collect()
    };
    let mut param_names = params(&ra);
    for p in params(&rb) {
        if !param_names.contains(&p) {
            param_names.push(p);
        }
    }
    for (id, &i) in &ia {
        let Some(&j) = ib.get(id) else {
            push(
                "instance",
                id,
                "",
                Field::Text("present".into()),
                Field::Text("absent".into()),
                Field::Null,
            );
            continue;
        };
        for p in &param_names {
            let (x, y) = (ra.results.cell(i, p), rb.results.cell(j, p));
            if x != y {
                let name = p.strip_prefix("param.").unwrap_or(p);
                push("param", id, name, cell_field(x), cell_field(y), Field::Null);
            }
        }
    }
    for id in ib.keys().filter(|id| !ia.contains_key(*id)) {
        push(
            "instance",
            id,
            "",
            Field::Text("absent".into()),
            Field::Text("present".into()),
            Field::Null,
        );
    }

    // Metrics per configuration: the show tables' columns side by side.
    let (ta, tb) = (ShowTable::of_run(&ra), ShowTable::of_run(&rb));
    let (ga, gb) = select_both(&ta, &tb, patterns)?;
    let label = |g: &Grid, r: usize| -> String {
        let parts: Vec<String> = (0..g.keys.saturating_sub(1))
            .filter(|&c| g.rows[r][c] != Field::Null)
            .map(|c| {
                // The exact value: configurations are matched by this label, and four
                // significant digits could pair two different ones.
                let v = match &g.rows[r][c] {
                    Field::Float(f) => f.to_string(),
                    other => other.text_plain(),
                };
                format!("{}={v}", g.header[c])
            })
            .collect();
        if parts.is_empty() {
            "(all)".into()
        } else {
            parts.join(",")
        }
    };
    let configs_b: BTreeMap<String, usize> =
        (0..gb.rows.len()).map(|r| (label(&gb, r), r)).collect();
    let mut seen = std::collections::BTreeSet::new();
    for r in 0..ga.rows.len() {
        let place = label(&ga, r);
        seen.insert(place.clone());
        let Some(&s) = configs_b.get(&place) else {
            push(
                "configuration",
                &place,
                "",
                Field::Text("present".into()),
                Field::Text("absent".into()),
                Field::Null,
            );
            continue;
        };
        let mut names: Vec<&String> = ga.header[ga.keys - 1..].iter().collect();
        for h in &gb.header[gb.keys - 1..] {
            if !names.contains(&h) {
                names.push(h);
            }
        }
        for name in names {
            let get = |g: &Grid, row: usize| {
                g.header
                    .iter()
                    .position(|h| h == name)
                    .map_or(Field::Null, |c| g.rows[row][c].clone())
            };
            let (x, y) = (get(&ga, r), get(&gb, s));
            if x != y {
                let delta = match (&x, &y) {
                    (Field::Num(p), Field::Num(q)) => Field::Num(Agg {
                        mean: q.mean - p.mean,
                        sd: None,
                        n: 1,
                    }),
                    (Field::Int(p), Field::Int(q)) => Field::Int(q - p),
                    _ => Field::Null,
                };
                push("metric", &place, name, x, y, delta);
            }
        }
    }
    for place in configs_b.keys().filter(|p| !seen.contains(*p)) {
        push(
            "configuration",
            place,
            "",
            Field::Text("absent".into()),
            Field::Text("present".into()),
            Field::Null,
        );
    }
    let row_n = vec![1; rows.len()];
    Ok(Grid {
        header: HEADER.iter().map(|s| s.to_string()).collect(),
        rows,
        row_n,
        keys: 3,
    })
}

/// Both runs' grids with the same selection; a pattern need only match in one of them (a
/// metric a changed run no longer reports is a difference, not a typo).
fn select_both(
    a: &ShowTable,
    b: &ShowTable,
    patterns: &[String],
) -> Result<(Grid, Grid), ShowError> {
    if patterns.is_empty() {
        return Ok((a.grid(&[], None, false)?, b.grid(&[], None, false)?));
    }
    let matches = |t: &ShowTable, p: &str| t.column_names().iter().any(|c| glob(p, c));
    if let Some(p) = patterns.iter().find(|p| !matches(a, p) && !matches(b, p)) {
        // Fails, naming the pattern and the columns there are.
        a.grid(std::slice::from_ref(p), None, false)?;
    }
    let own = |t: &ShowTable| -> Vec<String> {
        let p: Vec<String> = patterns.iter().filter(|p| matches(t, p)).cloned().collect();
        // Every pattern matched only the other run: this one still has its rows.
        if p.is_empty() {
            vec!["status".into()]
        } else {
            p
        }
    };
    Ok((a.grid(&own(a), None, false)?, b.grid(&own(b), None, false)?))
}

fn cell_field(c: &Cell) -> Field {
    match c {
        Cell::Null => Field::Null,
        Cell::Int(i) => Field::Int(*i),
        other => Field::Text(other.display()),
    }
}

/// `RUN_DIR/pipeline.yaml` as dotted key -> scalar text (lists by index); empty if the run
/// has none or it does not parse (the parameters still show what changed).
fn flat_yaml(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(dir.join("pipeline.yaml")) else {
        return out;
    };
    let Ok(docs) = yaml_rust2::YamlLoader::load_from_str(&text) else {
        return out;
    };
    fn walk(y: &yaml_rust2::Yaml, path: &str, out: &mut BTreeMap<String, String>) {
        use yaml_rust2::Yaml;
        let join = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        match y {
            Yaml::Hash(h) => {
                for (k, v) in h {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Real(r) => r.clone(),
                        Yaml::Boolean(b) => b.to_string(),
                        _ => "?".into(),
                    };
                    walk(v, &join(&key), out);
                }
            }
            Yaml::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &join(&i.to_string()), out);
                }
            }
            Yaml::String(s) => {
                out.insert(path.to_string(), s.clone());
            }
            Yaml::Integer(i) => {
                out.insert(path.to_string(), i.to_string());
            }
            Yaml::Real(r) => {
                out.insert(path.to_string(), r.clone());
            }
            Yaml::Boolean(b) => {
                out.insert(path.to_string(), b.to_string());
            }
            Yaml::Null => {
                out.insert(path.to_string(), "null".into());
            }
            _ => {}
        }
    }
    if let Some(doc) = docs.first() {
        walk(doc, "", &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_files_flatten_to_dotted_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pipeline.yaml"),
            "vars: {n: 5}\nstages:\n  a: {kind: synthetic, matrix: {rho: [0.1, 0.2]}}\n",
        )
        .unwrap();
        let f = flat_yaml(dir.path());
        assert_eq!(f.get("vars.n").map(String::as_str), Some("5"));
        assert_eq!(
            f.get("stages.a.matrix.rho.1").map(String::as_str),
            Some("0.2")
        );
        assert_eq!(
            f.get("stages.a.kind").map(String::as_str),
            Some("synthetic")
        );
        assert!(flat_yaml(&dir.path().join("none")).is_empty());
    }
}
