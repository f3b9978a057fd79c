//! `cbound data fetch`: download an official dataset archive, verify its checksum and unpack
//! it where the `load` stage reads it.

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::data::fetch::{fetch, FetchError, DATASET_NAMES};
use crate::error::Error;

#[derive(Debug, clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Download, verify (MD5 from the official sources) and unpack a dataset.
    Fetch(FetchArgs),
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// cifar10, cifar100, mnist or fashion-mnist.
    pub name: String,
    /// Folder to put it in (the dataset's own subfolder is created inside).
    #[arg(long, default_value = "datasets")]
    pub dest: PathBuf,
    /// Another server holding the same files (a mirror): replaces the official base URL.
    #[arg(long)]
    pub mirror: Option<String>,
}

pub fn data(args: DataArgs) -> Result<(), Error> {
    match args.command {
        DataCommand::Fetch(f) => {
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bytes}/{total_bytes} {bytes_per_sec} {wide_bar}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            });
            let progress = |done: u64, total: Option<u64>| {
                if let Some(bar) = &bar {
                    if let Some(t) = total {
                        bar.set_length(t);
                    }
                    bar.set_position(done);
                }
            };
            let result = fetch(&f.name, &f.dest, f.mirror.as_deref(), &progress);
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            match result {
                Ok(path) => {
                    println!("{}: {}", f.name, path.display());
                    Ok(())
                }
                Err(
                    e @ (FetchError::UnknownDataset { .. }
                    | FetchError::BadUrl { .. }
                    | FetchError::InvalidSpec { .. }),
                ) => Err(Error::Usage(format!(
                    "{e} (datasets: {})",
                    DATASET_NAMES.join(", ")
                ))),
                Err(e) => Err(Error::Environment(e.to_string())),
            }
        }
    }
}
