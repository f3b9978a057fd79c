//! `cbound data fetch`: download an official dataset archive, verify its checksum and unpack
//! it where the `load` stage reads it. `cbound data synth-cifar`: write the synthetic texture
//! task ([`crate::data::textures`]) in CIFAR-10's binary format, for `load` with
//! `format: cifar10`.

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::data::fetch::{fetch, FetchError, DATASET_NAMES};
use crate::data::textures::TextureTask;
use crate::data::DataError;
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
    /// Write a synthetic CIFAR-10-format task whose classes are textures (orientations of
    /// waves, rings) under random colour, brightness, phase and scale: separable only through
    /// augmentation-invariant features. Load it with `format: cifar10, path: DIR`.
    SynthCifar(SynthCifarArgs),
}

#[derive(Debug, clap::Args)]
pub struct SynthCifarArgs {
    /// Folder to write data_batch_1..5.bin, test_batch.bin and batches.meta.txt into.
    pub dir: PathBuf,
    /// Training images, over the five data_batch files (at least 5).
    #[arg(long, default_value_t = 50_000)]
    pub train: usize,
    /// Test images (at least 1).
    #[arg(long, default_value_t = 10_000)]
    pub test: usize,
    /// Same seed, same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use the first K of the ten textures (2 to 10).
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Shortest wave period, pixels of the 32x32 image (at least 2).
    #[arg(long, default_value_t = 4.0)]
    pub min_period: f64,
    /// Longest wave period, pixels (at most 32).
    #[arg(long, default_value_t = 8.0)]
    pub max_period: f64,
    /// Pixel noise standard deviation, [0, 1] units.
    #[arg(long, default_value_t = 0.02)]
    pub noise: f64,
    /// Two gray levels instead of two colours (all three channels equal): no colour
    /// information, so only the texture's orientation tells the classes apart.
    #[arg(long)]
    pub gray: bool,
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
        DataCommand::SynthCifar(a) => {
            let task = TextureTask {
                classes: a.classes,
                period: (a.min_period, a.max_period),
                noise: a.noise,
                gray: a.gray,
                seed: a.seed,
            };
            match task.write_cifar10_dir(&a.dir, a.train, a.test) {
                Ok(w) => {
                    println!(
                        "synth-cifar: {} ({} train, {} test images, {} classes{}, seed {})",
                        a.dir.display(),
                        w.train,
                        w.test,
                        a.classes,
                        if a.gray { ", gray" } else { "" },
                        a.seed
                    );
                    Ok(())
                }
                Err(e @ DataError::InvalidArgument(_)) => Err(Error::Usage(e.to_string())),
                Err(e) => Err(Error::Environment(e.to_string())),
            }
        }
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
