//! `cbound dag`: the stage graph as Graphviz DOT or Mermaid, with instance counts, or every
//! instance with `--instances`.

use super::Dag;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Dot,
    Mermaid,
}

/// A node's name and label.
type Labelled = (String, String);
/// An edge from one node name to another.
type Edge = (String, String);

fn node_label(dag: &Dag, stage: usize) -> String {
    let decl = &dag.pipeline.stages[stage];
    let n = dag.by_stage[stage].len();
    if n == 1 {
        format!("{} ({})", decl.id, decl.kind)
    } else {
        format!("{} ({}) x{n}", decl.id, decl.kind)
    }
}

pub fn render(dag: &Dag, format: Format, instances: bool) -> String {
    // Nodes: (name, label); edges: (from, to).
    let (nodes, edges): (Vec<Labelled>, Vec<Edge>) = if instances {
        (
            dag.instances
                .iter()
                .enumerate()
                .map(|(i, inst)| (format!("n{i}"), inst.id.clone()))
                .collect(),
            dag.instances
                .iter()
                .enumerate()
                .flat_map(|(i, inst)| {
                    inst.inputs
                        .iter()
                        .map(move |u| (format!("n{u}"), format!("n{i}")))
                })
                .collect(),
        )
    } else {
        let index = |id: &str| dag.pipeline.stages.iter().position(|s| s.id == id);
        (
            dag.stage_order
                .iter()
                .map(|&s| (format!("s{s}"), node_label(dag, s)))
                .collect(),
            dag.stage_order
                .iter()
                .flat_map(|&s| {
                    dag.pipeline.stages[s].inputs.iter().filter_map(move |inp| {
                        index(inp).map(|u| (format!("s{u}"), format!("s{s}")))
                    })
                })
                .collect(),
        )
    };
    let mut out = String::new();
    match format {
        Format::Dot => {
            out.push_str(&format!(
                "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];\n",
                dag.pipeline.name
            ));
            for (name, label) in &nodes {
                out.push_str(&format!(
                    "  {name} [label=\"{}\"];\n",
                    label.replace('"', "\\\"")
                ));
            }
            for (a, b) in &edges {
                out.push_str(&format!("  {a} -> {b};\n"));
            }
            out.push_str("}\n");
        }
        Format::Mermaid => {
            out.push_str("flowchart LR\n");
            for (name, label) in &nodes {
                out.push_str(&format!("  {name}[\"{}\"]\n", label.replace('"', "#quot;")));
            }
            for (a, b) in &edges {
                out.push_str(&format!("  {a} --> {b}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn dot_and_mermaid_list_nodes_and_edges() {
        let registry = crate::stage::testkinds::registry();
        let p = crate::config::load_str(
            "name: g\nstages:\n  a: {kind: synthetic, matrix: {n: [1, 2]}}\n  b: {kind: synthetic, inputs: a}\n",
            Path::new("g.yaml"),
            &[],
            &registry,
        )
        .unwrap();
        let dag = Dag::build(p, &registry);
        let dot = render(&dag, Format::Dot, false);
        assert!(dot.contains("s0 [label=\"a (synthetic) x2\"]"), "{dot}");
        assert!(dot.contains("s0 -> s1;"), "{dot}");
        let mermaid = render(&dag, Format::Mermaid, true);
        assert!(
            mermaid.contains("n0 --> n2") && mermaid.contains("n1 --> n3"),
            "{mermaid}"
        );
    }
}
