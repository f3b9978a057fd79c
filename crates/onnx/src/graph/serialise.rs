//! Serialisation to ONNX protobuf: node attributes, initializer tensors, value infos (with
//! the optional symbolic batch axis) and the `ModelProto` with its opset import.

use std::collections::HashMap;

use prost::Message;

use super::{invalid, Graph, GraphError, GraphResult, Op, Reduction, TensorData, ValueId};
use super::{CBOUND_DOMAIN, IR_VERSION, MAX_OPSET, NCHWC_DOMAIN, OPSET};
use crate::proto;

impl TensorData {
    fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F16(v) | TensorData::BF16(v) => {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    fn to_proto(&self, name: Option<String>, shape: &[usize]) -> proto::TensorProto {
        proto::TensorProto {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: Some(self.dtype().onnx_code()),
            name,
            doc_string: None,
            raw_data: Some(self.to_le_bytes()),
        }
    }
}

impl Reduction {
    fn as_str(self) -> &'static str {
        match self {
            Reduction::None => "none",
            Reduction::Add => "add",
        }
    }
}

impl Op {
    fn attributes(&self) -> Vec<proto::AttributeProto> {
        let ints = |name: &str, v: &[usize]| attr_ints(name, v.iter().map(|&x| x as i64).collect());
        match self {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => vec![
                attr_float("alpha", *alpha),
                attr_float("beta", *beta),
                attr_int("transA", i64::from(*trans_a)),
                attr_int("transB", i64::from(*trans_b)),
            ],
            Op::ReduceSum { keepdims, .. }
            | Op::ReduceMean { keepdims, .. }
            | Op::ReduceMax { keepdims, .. } => vec![attr_int("keepdims", i64::from(*keepdims))],
            Op::Softmax { axis } | Op::LogSoftmax { axis } | Op::Flatten { axis } => {
                vec![attr_int("axis", *axis as i64)]
            }
            Op::Concat { axis } | Op::Gather { axis } | Op::GatherElements { axis } => {
                vec![attr_int("axis", *axis as i64)]
            }
            Op::Split { axis, .. } => vec![attr_int("axis", *axis as i64)],
            Op::Transpose { perm } => vec![ints("perm", perm)],
            Op::Conv {
                strides,
                pads,
                dilations,
                group,
                ..
            } => vec![
                ints("strides", strides),
                ints("pads", pads),
                ints("dilations", dilations),
                attr_int("group", *group as i64),
            ],
            Op::ConvTranspose {
                strides,
                pads,
                output_padding,
                group,
            } => vec![
                ints("strides", strides),
                ints("pads", pads),
                ints("output_padding", output_padding),
                ints("dilations", &[1, 1]),
                attr_int("group", *group as i64),
            ],
            Op::AveragePool {
                kernel,
                strides,
                pads,
            } => vec![
                ints("kernel_shape", kernel),
                ints("strides", strides),
                ints("pads", pads),
                attr_int("count_include_pad", 1),
            ],
            Op::MaxPool {
                kernel,
                strides,
                pads,
            } => vec![
                ints("kernel_shape", kernel),
                ints("strides", strides),
                ints("pads", pads),
                attr_int("storage_order", 0),
            ],
            Op::ScatterElements { axis, reduction } => vec![
                attr_int("axis", *axis as i64),
                attr_string("reduction", reduction.as_str()),
            ],
            Op::ScatterNd { reduction } => vec![attr_string("reduction", reduction.as_str())],
            Op::BatchNormalization { epsilon }
            | Op::BatchNormTrain { epsilon }
            | Op::BatchNormTrainGrad { epsilon } => vec![attr_float("epsilon", *epsilon)],
            Op::Cast { to } => vec![attr_int("to", i64::from(to.onnx_code()))],
            Op::Pad { .. } => vec![attr_string("mode", "constant")],
            Op::AdamUpdate {
                beta1,
                beta2,
                g2_scale,
                l2,
            } => vec![
                attr_float("beta1", *beta1),
                attr_float("beta2", *beta2),
                attr_float("g2_scale", *g2_scale),
                attr_float("l2", *l2),
            ],
            Op::Im2Col {
                kernel,
                strides,
                pads,
                images,
                chunk,
            } => vec![
                ints("kernel_shape", kernel),
                ints("strides", strides),
                ints("pads", pads),
                attr_int("images", *images as i64),
                attr_int("chunk", *chunk as i64),
            ],
            Op::ConstantOfShape { value } => vec![proto::AttributeProto {
                name: Some("value".into()),
                r#type: Some(proto::attribute_type::TENSOR),
                t: Some(value.to_proto(None, &[1])),
                ..Default::default()
            }],
            _ => Vec::new(),
        }
    }
}

fn attr_int(name: &str, i: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_type::INT),
        i: Some(i),
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_type::FLOAT),
        f: Some(f),
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: Vec<i64>) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_type::INTS),
        ints,
        ..Default::default()
    }
}

fn attr_string(name: &str, s: &str) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_type::STRING),
        s: Some(s.as_bytes().to_vec()),
        ..Default::default()
    }
}

impl Graph {
    // ----- serialisation -----

    fn value_info(&self, v: ValueId) -> proto::ValueInfoProto {
        let info = &self.values[v.0];
        let symbolic = self.batch_dims.contains(&v);
        let dim = info
            .shape
            .iter()
            .enumerate()
            .map(|(i, &d)| proto::tensor_shape_proto::Dimension {
                value: Some(if i == 0 && symbolic {
                    proto::tensor_shape_proto::dimension::Value::DimParam("batch".into())
                } else {
                    proto::tensor_shape_proto::dimension::Value::DimValue(d as i64)
                }),
                denotation: None,
            })
            .collect();
        proto::ValueInfoProto {
            name: Some(info.name.clone()),
            r#type: Some(proto::TypeProto {
                value: Some(proto::type_proto::Value::TensorType(
                    proto::type_proto::Tensor {
                        elem_type: Some(info.dtype.onnx_code()),
                        shape: Some(proto::TensorShapeProto { dim }),
                    },
                )),
                denotation: None,
            }),
            doc_string: None,
        }
    }

    /// Builds the `ModelProto` (ai.onnx, plus [`CBOUND_DOMAIN`] where a node uses it).
    pub fn to_model(&self, opset: i64) -> GraphResult<proto::ModelProto> {
        if !(OPSET..=MAX_OPSET).contains(&opset) {
            return Err(GraphError::Opset { requested: opset });
        }
        if self.outputs.is_empty() {
            return Err(invalid(
                "graph",
                format!("graph `{}` has no outputs", self.name),
            ));
        }
        let mut node = Vec::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            let name_of = |v: &ValueId| self.values[v.0].name.clone();
            let input: Vec<String> = n.inputs.iter().map(name_of).collect();
            let output: Vec<String> = n.outputs.iter().map(name_of).collect();
            let label = format!("n{i}_{}", n.op.onnx_name());
            if let Op::Conv {
                blocked: Some(block),
                ..
            } = &n.op
            {
                let channels = self.values[n.outputs[0].0].shape[1];
                let conv = n.op.attributes();
                node.extend(
                    self.blocked_conv_nodes(&label, &input, &output[0], *block, channels, conv)?,
                );
                continue;
            }
            node.push(proto::NodeProto {
                input,
                output,
                name: Some(label),
                op_type: Some(n.op.onnx_name().to_string()),
                domain: n.op.domain().map(String::from),
                attribute: n.op.attributes(),
                doc_string: None,
            });
        }
        let initializer = self
            .initializers
            .iter()
            .map(|(v, data)| {
                data.to_proto(Some(self.values[v.0].name.clone()), &self.values[v.0].shape)
            })
            .collect();
        let mut opset_import = vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }];
        for domain in [CBOUND_DOMAIN, NCHWC_DOMAIN] {
            if node.iter().any(|n| n.domain.as_deref() == Some(domain)) {
                opset_import.push(proto::OperatorSetIdProto {
                    domain: Some(domain.into()),
                    version: Some(1),
                });
            }
        }
        let graph = proto::GraphProto {
            node,
            name: Some(self.name.clone()),
            initializer,
            doc_string: self.doc.clone(),
            input: self.inputs.iter().map(|&v| self.value_info(v)).collect(),
            output: self.outputs.iter().map(|&v| self.value_info(v)).collect(),
            value_info: Vec::new(),
        };

        Ok(proto::ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import,
            producer_name: Some("cbound".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            domain: None,
            model_version: None,
            doc_string: None,
            graph: Some(graph),
            metadata_props: Vec::new(),
        })
    }

    /// The four nodes of a blocked convolution (`Op::Conv` with `blocked: Some(block)`):
    /// the input reordered to NCHWc, the weight to MLAS's blocked filter layout (cbound's
    /// `BlockFilter`, since ONNX Runtime reorders only constant weights), the NCHWc `Conv`,
    /// and its output reordered back to NCHW; the NCHWc `Conv` takes the plain one's
    /// attributes (`conv_attributes`). The intermediate names extend the output's
    /// name, which is unique in the graph, with a suffix no builder gives a value.
    fn blocked_conv_nodes(
        &self,
        label: &str,
        input: &[String],
        output: &str,
        block: usize,
        channels: usize,
        conv_attributes: Vec<proto::AttributeProto>,
    ) -> GraphResult<Vec<proto::NodeProto>> {
        let tmp = |what: &str| -> GraphResult<String> {
            let name = format!("{output}::nchwc_{what}");
            if self.names.contains(&name) {
                return Err(GraphError::DuplicateName(name));
            }
            Ok(name)
        };
        let (xb, wb, yb) = (tmp("x")?, tmp("w")?, tmp("y")?);
        let node =
            |op: &str, domain: &str, part: &str, input: Vec<String>, output: String, attribute| {
                proto::NodeProto {
                    input,
                    output: vec![output],
                    name: Some(format!("{label}_{part}")),
                    op_type: Some(op.to_string()),
                    domain: Some(domain.to_string()),
                    attribute,
                    doc_string: None,
                }
            };
        let mut conv_in = vec![xb.clone(), wb.clone()];
        conv_in.extend(input.get(2).cloned());
        Ok(vec![
            node(
                "ReorderInput",
                NCHWC_DOMAIN,
                "reorder_x",
                vec![input[0].clone()],
                xb,
                Vec::new(),
            ),
            node(
                "BlockFilter",
                CBOUND_DOMAIN,
                "block_w",
                vec![input[1].clone()],
                wb,
                vec![attr_int("block", block as i64)],
            ),
            node(
                "Conv",
                NCHWC_DOMAIN,
                "nchwc",
                conv_in,
                yb.clone(),
                conv_attributes,
            ),
            node(
                "ReorderOutput",
                NCHWC_DOMAIN,
                "reorder_y",
                vec![yb],
                output.to_string(),
                vec![attr_int("channels", channels as i64)],
            ),
        ])
    }

    /// Serialises the graph as an ONNX model (`.onnx` bytes).
    pub fn to_model_bytes(&self, opset: i64) -> GraphResult<Vec<u8>> {
        Ok(self.to_model(opset)?.encode_to_vec())
    }

    /// Number of nodes of each op type, for diagnostics.
    pub fn op_histogram(&self) -> Vec<(&'static str, usize)> {
        let mut counts: HashMap<&'static str, usize> = HashMap::new();
        for n in &self.nodes {
            *counts.entry(n.op.onnx_name()).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::{DType, Graph, GraphError, GraphResult, OPSET};

    #[test]
    fn opset_range_is_checked() -> GraphResult<()> {
        let mut g = Graph::new("t");
        let x = g.input("x", DType::F32, &[2])?;
        let y = g.relu(x)?;
        g.output(y, "y")?;
        assert!(matches!(
            g.to_model_bytes(17),
            Err(GraphError::Opset { .. })
        ));
        assert!(!g.to_model_bytes(OPSET)?.is_empty());
        Ok(())
    }
}
