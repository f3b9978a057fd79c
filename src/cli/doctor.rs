//! `cbound doctor`: where ONNX Runtime was found, its version, its execution providers, the
//! channel block its CPU convolution kernels use on this CPU, and
//! whether CUDA works here, with ONNX Runtime's own reason when it does not: the NVIDIA driver
//! and its GPUs, the CUDA provider library, each CUDA and cuDNN library found and loaded (or
//! exactly which is missing, and from which pip package), and the CUDA and cuDNN versions.

use std::path::PathBuf;

use crate::error::Error;
use crate::onnx::runtime::{doctor as probe, LibrarySearch};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Use this libonnxruntime.so instead of searching.
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
}

pub fn doctor(args: DoctorArgs) -> Result<(), Error> {
    let report = probe(&LibrarySearch {
        explicit: args.ort_lib,
        ..LibrarySearch::default()
    })
    .map_err(|e| Error::Environment(e.to_string()))?;
    println!("cbound {}", env!("CARGO_PKG_VERSION"));
    println!(
        "onnx runtime: {} ({:?})",
        report.library.display(),
        report.source
    );
    println!("version: {}", report.version);
    println!("execution providers: {}", report.providers.join(", "));
    match report.conv_block {
        Some(b) => println!("cpu convolutions: NCHWc kernels in channel blocks of {b}"),
        None => println!("cpu convolutions: plain (no NCHWc kernels for this CPU)"),
    }
    for line in report.cuda.lines() {
        println!("{line}");
    }
    // With nothing of CUDA here, the line above said all; ONNX Runtime's own error would
    // only repeat it less plainly.
    if !report.cuda.absent() {
        match (report.cuda_usable, &report.cuda_detail) {
            (true, _) => println!("cuda: usable"),
            (false, Some(why)) => println!("cuda: not usable: {why}"),
            (false, None) => println!("cuda: not usable"),
        }
    }
    Ok(())
}
