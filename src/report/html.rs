//! `report.html`: one file a reader can mail or archive without the run directory. Plots are
//! inlined as SVG (sharp at any zoom, small), styles are inline, and there is no script,
//! so it opens the same in any browser, offline.
//!
//! Everything from the run (instance ids, errors, sweep values, statements) is user- or
//! stage-controlled text and goes through [`escape`].

use std::fmt::Write;

use super::figures::final_rows;
use super::images::Image;
use super::load::{Cell, Instance, Run, Table};

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A plot as it goes into the page.
pub struct Plot {
    pub name: String,
    pub title: String,
    pub caption: String,
    pub svg: String,
}

const STYLE: &str = r#"
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 1320px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0 2em; }
figure svg, figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; margin-top: .3em; }
tr.failed td, tr.violated td { background: #fde8e8; }
tr.skipped td { background: #fff6db; }
tr.as_stated td { color: #666; font-style: italic; }
tr.row-error td { color: #888; }
.badge { display: inline-block; padding: 0 .4em; border-radius: .3em; font-size: .85em;
         font-style: normal; }
.badge.valid { background: #e3f4e3; color: #185c18; }
.badge.as_stated { background: #eee; color: #555; }
.badge.violated { background: #d33; color: #fff; }
.badge.ok, .badge.cached { background: #e3f4e3; color: #185c18; }
.badge.failed { background: #d33; color: #fff; }
.badge.skipped { background: #f4d35e; color: #222; }
.notes li { color: #555; }
code { background: #f4f4f4; padding: 0 .2em; }
"#;

fn badge(class: &str, text: &str) -> String {
    format!(
        "<span class=\"badge {}\">{}</span>",
        escape(class),
        escape(text)
    )
}

fn td(cell: &Cell) -> String {
    match cell {
        Cell::Int(_) | Cell::Float(_) => {
            format!("<td class=\"num\">{}</td>", escape(&cell.display()))
        }
        other => format!("<td>{}</td>", escape(&other.display())),
    }
}

fn meta_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(meta_value).collect::<Vec<_>>().join(" "),
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}: {}", meta_value(v)))
            .collect::<Vec<_>>()
            .join(", "),
        serde_json::Value::Number(n) => n
            .as_f64()
            .map(super::load::format_number)
            .unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

pub fn render(
    run: &Run,
    plots: &[Plot],
    images: &[Image],
    notes: &[String],
    bounds: &[(usize, Table)],
) -> String {
    let text = |k: &str| run.meta.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let pipeline = text("pipeline")
        .or_else(|| run.results.str(0, "pipeline").map(str::to_string))
        .unwrap_or_else(|| "run".into());
    let run_id = text("run_id")
        .or_else(|| run.results.str(0, "run_id").map(str::to_string))
        .unwrap_or_default();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"cbound {}\">\n<title>{} {} - cbound report</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<h1>{} <small>{}</small></h1>\n",
        env!("CARGO_PKG_VERSION"),
        escape(&pipeline),
        escape(&run_id),
        escape(&pipeline),
        escape(&run_id),
    );
    h.push_str(
        "<nav><a href=\"#run\">Run</a><a href=\"#plots\">Plots</a><a href=\"#bounds\">Bounds</a>\
         <a href=\"#results\">Results</a><a href=\"#parameters\">Parameters</a></nav>\n",
    );

    h.push_str("<h2 id=\"run\">Run</h2>\n<table>\n");
    match run.meta.as_object() {
        Some(m) => {
            for (k, v) in m {
                let _ = writeln!(
                    h,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    escape(k),
                    escape(&meta_value(v))
                );
            }
        }
        None => h.push_str("<tr><td>run.json is missing or unreadable</td></tr>\n"),
    }
    let _ = writeln!(
        h,
        "<tr><th>directory</th><td>{}</td></tr>\n</table>",
        escape(&run.dir.display().to_string())
    );

    h.push_str("<h2 id=\"plots\">Plots</h2>\n");
    for p in plots {
        // Only the <svg> element itself: an XML prolog is not valid inside HTML.
        let svg = p.svg.find("<svg").map(|i| &p.svg[i..]).unwrap_or("");
        let _ = writeln!(
            h,
            // The title is drawn in the plot; aria-label keeps it for screen readers.
            "<figure id=\"fig-{}\" aria-label=\"{}\">\n{svg}\n<figcaption>{} \
             (<code>{}.png</code>, <code>{}.svg</code>)</figcaption>\n</figure>",
            escape(&p.name),
            escape(&p.title),
            escape(&p.caption),
            escape(&p.name),
            escape(&p.name),
        );
    }
    // Images the stage kinds declare they write (a kind declared in YAML), after cbound's own.
    for img in images {
        let _ = writeln!(
            h,
            "<figure>\n<img src=\"{}\" alt=\"{}\">\n<figcaption>{} <small>({})</small>: \
             <code>{}</code></figcaption>\n</figure>",
            img.data_uri(),
            escape(&format!("{} of {}", img.file, img.instance)),
            escape(&img.instance),
            escape(&img.stage),
            escape(&img.file),
        );
    }
    if plots.is_empty() && images.is_empty() {
        h.push_str("<p>No plot: the run has no data any plot needs.</p>\n");
    }
    if !notes.is_empty() {
        h.push_str("<p>Not drawn:</p>\n<ul class=\"notes\">\n");
        for n in notes {
            let _ = writeln!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul>\n");
    }

    h.push_str("<h2 id=\"bounds\">Bounds</h2>\n");
    if bounds.is_empty() {
        h.push_str("<p>The run has no bounds (no finished bound stage).</p>\n");
    }
    for (i, t) in bounds {
        bounds_table(&mut h, &run.instances[*i], t);
    }

    h.push_str("<h2 id=\"results\">Results</h2>\n");
    h.push_str(
        "<p>One table per stage, from <code>results.parquet</code>: status, time, sweep values \
         and the metrics each instance reported.</p>\n",
    );
    for stage in stages(run) {
        results_table(&mut h, run, &stage, |c| {
            c.starts_with("sweep.") || c.starts_with("metric.")
        });
    }
    h.push_str("<h2 id=\"parameters\">Parameters</h2>\n");
    for stage in stages(run) {
        let _ = writeln!(h, "<details><summary>{}</summary>", escape(&stage));
        results_table(&mut h, run, &stage, |c| c.starts_with("param."));
        h.push_str("</details>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn stages(run: &Run) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for r in 0..run.results.len() {
        if let Some(s) = run.results.str(r, "stage") {
            if !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        }
    }
    out
}

/// The rows of one stage, with the chosen columns that are non-null somewhere in it (a
/// results table is the union of every stage's columns, mostly empty for any one stage).
fn results_table(h: &mut String, run: &Run, stage: &str, wanted: impl Fn(&str) -> bool) {
    let t = &run.results;
    let rows: Vec<usize> = (0..t.len())
        .filter(|&r| t.str(r, "stage") == Some(stage))
        .collect();
    let cols: Vec<&String> = t
        .columns
        .iter()
        .filter(|c| wanted(c) && rows.iter().any(|&r| !t.cell(r, c).is_null()))
        .collect();
    let any_error = rows.iter().any(|&r| !t.cell(r, "error").is_null());
    let kind = rows
        .first()
        .and_then(|&r| t.str(r, "kind"))
        .unwrap_or_default();
    let _ = write!(
        h,
        "<h3 id=\"stage-{}\">{} <small>({})</small></h3>\n<div class=\"scroll\"><table>\n<tr>\
         <th>instance</th><th>status</th><th>seconds</th>",
        escape(stage),
        escape(stage),
        escape(kind)
    );
    for c in &cols {
        let short = c.split_once('.').map(|x| x.1).unwrap_or(c);
        let _ = write!(h, "<th title=\"{}\">{}</th>", escape(c), escape(short));
    }
    if any_error {
        h.push_str("<th>error</th>");
    }
    h.push_str("</tr>\n");
    for &r in &rows {
        let status = t.str(r, "status").unwrap_or_default();
        let _ = write!(
            h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td>{}",
            escape(status),
            escape(t.str(r, "instance").unwrap_or_default()),
            badge(status, status),
            td(t.cell(r, "seconds")),
        );
        for c in &cols {
            h.push_str(&td(t.cell(r, c)));
        }
        if any_error {
            h.push_str(&td(t.cell(r, "error")));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table></div>\n");
}

fn bounds_table(h: &mut String, inst: &Instance, t: &Table) {
    let rows = final_rows(t);
    let _ = write!(
        h,
        "<h3>{}</h3>\n<div class=\"scroll\"><table>\n<tr><th>name</th><th>status</th>\
         <th>statement</th><th>point value (nats)</th><th>certified value</th><th>certification</th><th>truth (nats)</th>\
         <th>violated</th><th>margin (nats)</th><th>error</th></tr>\n",
        escape(&inst.instance)
    );
    for r in rows {
        let status = t.str(r, "status").unwrap_or_default();
        let violated = t.cell(r, "violated") == &Cell::Bool(true);
        let class = if violated {
            "violated"
        } else if !t.cell(r, "error").is_null() {
            "row-error"
        } else {
            status
        };
        let statement = match (t.str(r, "statement"), t.str(r, "lhs"), t.str(r, "side")) {
            (Some(s), _, _) => s.to_string(),
            (None, Some(l), Some(side)) => format!("{side} bound on {l}"),
            _ => String::new(),
        };
        let _ = writeln!(
            h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td>{}{}{}{}<td>{}</td>{}{}</tr>",
            escape(class),
            escape(t.str(r, "name").unwrap_or_default()),
            if status.is_empty() {
                String::new()
            } else {
                badge(status, status)
            },
            escape(&statement),
            td(t.cell(r, "value_nats")),
            td(t.cell(r, "certified_nats")),
            td(t.cell(r, "certification")),
            td(t.cell(r, "truth_nats")),
            if violated {
                badge("violated", "violated")
            } else {
                escape(&t.cell(r, "violated").display())
            },
            td(t.cell(r, "margin_nats")),
            td(t.cell(r, "error")),
        );
    }
    h.push_str("</table></div>\n");
    let summary: Vec<String> = [
        ("violations", "violations"),
        ("violations_valid", "of valid bounds"),
        ("certified_violations", "certified values beyond the truth"),
        ("confidence", "confidence"),
        ("iuz_lower_nats", "certified I(U;Z) lower bound"),
        ("accuracy_lower_bound", "certified accuracy lower bound"),
        ("accuracy_upper_bound", "certified accuracy upper bound"),
        ("probe_accuracy", "probe accuracy"),
    ]
    .iter()
    .filter_map(|(m, label)| {
        inst.metric(m)
            .map(|v| format!("{label}: {}", super::load::format_number(v)))
    })
    .collect();
    if !summary.is_empty() {
        let _ = writeln!(h, "<p>{}</p>", escape(&summary.join("; ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_attributes() {
        assert_eq!(
            escape(r#"<script>alert("x & 'y'")</script>"#),
            "&lt;script&gt;alert(&quot;x &amp; &#39;y&#39;&quot;)&lt;/script&gt;"
        );
        assert_eq!(escape("I(U;Z) ≥ 0"), "I(U;Z) ≥ 0");
    }

    #[test]
    fn page_escapes_run_text_and_strips_xml_prolog() {
        let results = Table {
            columns: [
                "stage", "instance", "kind", "status", "seconds", "error", "metric.m",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            rows: vec![vec![
                Cell::Text("s".into()),
                Cell::Text("s@x=<b>".into()),
                Cell::Text("k".into()),
                Cell::Text("failed".into()),
                Cell::Null,
                Cell::Text("boom <&>".into()),
                Cell::Null,
            ]],
        };
        let run = Run {
            dir: "d".into(),
            meta: serde_json::json!({"pipeline": "p<", "run_id": "r", "command": ["a", "b"]}),
            results,
            instances: vec![],
        };
        let plot = Plot {
            name: "n".into(),
            title: "t".into(),
            caption: "c".into(),
            svg: "<?xml version=\"1.0\"?><svg viewBox=\"0 0 1 1\"></svg>".into(),
        };
        let image = Image {
            stage: "s".into(),
            instance: "s@x=<b>".into(),
            file: "pca<1>.png".into(),
            mime: "image/png",
            bytes: b"\x89PNG".to_vec(),
        };
        let page = render(&run, &[plot], &[image], &["skipped <x>".into()], &[]);
        // A declared image is embedded, its names escaped.
        assert!(
            page.contains("<img src=\"data:image/png;base64,iVBORw==\""),
            "{page}"
        );
        assert!(page.contains("<code>pca&lt;1&gt;.png</code>"), "{page}");
        assert!(page.contains("s@x=&lt;b&gt;"), "{page}");
        assert!(page.contains("boom &lt;&amp;&gt;"));
        assert!(page.contains("<tr class=\"failed\">"));
        assert!(page.contains("p&lt;"));
        assert!(page.contains("a b"));
        assert!(page.contains("<svg viewBox"));
        assert!(!page.contains("<?xml"));
        assert!(page.contains("skipped &lt;x&gt;"));
        // metric.m is null everywhere in the stage: no empty column.
        assert!(!page.contains(">m</th>"));
    }
}
