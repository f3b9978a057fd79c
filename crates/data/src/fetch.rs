//! `cbound data fetch`: download the standard image datasets from their official sources,
//! verify them against the published MD5 checksums and put them where the readers look.
//!
//! | name | source | lands in |
//! |---|---|---|
//! | `cifar10` | `cifar-10-binary.tar.gz` | `DEST/cifar-10-batches-bin/` |
//! | `cifar100` | `cifar-100-binary.tar.gz` | `DEST/cifar-100-binary/` |
//! | `mnist` | the four IDX `.gz` files | `DEST/mnist/` |
//! | `fashion-mnist` | the four IDX `.gz` files | `DEST/fashion-mnist/` |
//!
//! Downloads stream into a temporary file inside the destination (never into memory), the
//! checksum is computed on the way, and nothing is moved into place before it matches:
//! a half-finished or corrupted download can never look like a dataset. Tar archives are
//! unpacked into a staging folder that is renamed into place whole; entries with `..`,
//! absolute paths or links are refused, so an archive cannot write outside it. IDX files
//! stay gzip-compressed because the IDX reader reads gzip. Unpacked archives get a
//! `.cbound-fetch.md5` file listing each member's MD5 (md5sum format), which is how a
//! later call recognises a complete, unmodified copy and does nothing.
//!
//! MD5 is what the dataset authors publish, so it is what can be checked; it detects
//! corruption and substitution of these fixed files, which is all it is used for here.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use md5::{Digest, Md5};
use thiserror::Error;

/// Names accepted by [`fetch`], in the order `cbound data fetch --help` lists them.
pub const DATASET_NAMES: [&str; 4] = ["cifar10", "cifar100", "mnist", "fashion-mnist"];

/// Name of the checksum list written into an unpacked archive's folder.
pub const MARKER_FILE: &str = ".cbound-fetch.md5";

/// Read and hash buffer; large enough that per-call overhead vanishes next to the network.
const BUF: usize = 1 << 16;

/// The largest response accepted: the official archives are at most about 170 MB, so an
/// endless body from a hostile or broken mirror stops here instead of filling the disk.
pub const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

/// How long reading one response body may take: generous for a slow link (about 170 MB at
/// 100 kB/s), but a stalled mirror ends in an error instead of hanging forever.
const BODY_TIMEOUT: Duration = Duration::from_secs(1800);

/// One file on the server, with its published MD5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// File name, appended to the base URL.
    pub name: String,
    /// Lower-case hex MD5 of the file as published by its source.
    pub md5: String,
}

/// What becomes of the downloaded files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packing {
    /// One gzip-compressed tar archive, unpacked into the destination. It must create the
    /// folder `root` holding at least `members` (paths relative to `root`).
    TarGz {
        /// The archive's top-level folder, which becomes `DEST/root`.
        root: String,
        /// Files that must be present after unpacking.
        members: Vec<String>,
    },
    /// Files kept exactly as downloaded, in `DEST/folder`.
    Files {
        /// Sub-folder of the destination.
        folder: String,
    },
}

/// A dataset's download: where it comes from, its checksums and how it is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSpec {
    /// Dataset name (`cifar10`, ...).
    pub name: String,
    /// URL the file names are appended to; ends with `/`.
    pub base_url: String,
    /// Files to download (exactly one for [`Packing::TarGz`]).
    pub files: Vec<RemoteFile>,
    /// How they are stored.
    pub packing: Packing,
    /// Where a system package installs the same data (Debian's `dataset-fashion-mnist`);
    /// an installed file is linked instead of downloaded when it can be trusted (see
    /// [`Installed`]).
    pub installed: Option<Installed>,
}

/// A dataset as a system package installs it. A file there is linked when its MD5 is the
/// official one, or when the package's own checksum list vouches for it: Debian
/// recompresses the `.gz` files, so their bytes differ from the official archive's while
/// the package's list still proves them unmodified since installation. The `load` stage
/// hashes a file's content, not its link, so replacing the installed files still
/// invalidates cached results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The folder holding the files.
    pub dir: PathBuf,
    /// The package's `md5sums` list (`<md5>  <path relative to />` lines), if any.
    pub package_md5sums: Option<PathBuf>,
}

impl Installed {
    /// The installed copy of `file`, if present and vouched for.
    fn trusted(&self, file: &RemoteFile) -> Option<PathBuf> {
        let path = self.dir.join(&file.name);
        let md5 = md5_file(&path).ok()?;
        if md5 == file.md5 {
            return Some(path);
        }
        let list = fs::read_to_string(self.package_md5sums.as_ref()?).ok()?;
        let listed = list.lines().find_map(|line| {
            let (sum, name) = line.split_once("  ")?;
            (Path::new("/").join(name.trim()) == path).then(|| sum.trim().to_string())
        })?;
        (listed == md5).then_some(path)
    }
}

/// Why a fetch failed. Every variant names the URL or file involved.
#[derive(Debug, Error)]
pub enum FetchError {
    /// A dataset name that is not in the registry.
    #[error("unknown dataset '{name}': expected one of {}", DATASET_NAMES.join(", "))]
    UnknownDataset {
        /// The name given.
        name: String,
    },
    /// A base URL that is not http(s).
    #[error("base URL '{url}' is not usable: expected an http:// or https:// URL of the folder holding the files (e.g. https://mirror.example.org/cifar/), or a local folder holding them (file:///srv/datasets/ or an existing path)")]
    BadUrl {
        /// The URL given.
        url: String,
    },
    /// An [`ArchiveSpec`] that cannot be fetched as written.
    #[error("archive spec '{name}': {reason}")]
    InvalidSpec {
        /// Spec name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No HTTP response: DNS, connection, TLS or protocol failure.
    #[error("GET {url} failed: {source} (check the network, or pass a mirror base URL)")]
    Transport {
        /// The URL requested.
        url: String,
        /// The client's error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// A response other than 200 OK.
    #[error("GET {url}: server answered HTTP {status}, expected 200 OK (is the URL or mirror base URL right?)")]
    Http {
        /// The URL requested.
        url: String,
        /// Status code received.
        status: u16,
    },
    /// The body is larger than any archive cbound fetches: a wrong URL or a hostile mirror.
    #[error("GET {url}: the response exceeds {limit} bytes, far more than the archive; stopped and deleted (check the URL or mirror)")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The body broke off while reading.
    #[error("GET {url}: reading the response failed after {done} bytes: {source}")]
    Read {
        /// The URL requested.
        url: String,
        /// Bytes received before the failure.
        done: u64,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// Fewer or more bytes than the server announced.
    #[error("GET {url}: received {got} bytes, but Content-Length announced {expected}; the download was deleted")]
    Length {
        /// The URL requested.
        url: String,
        /// Announced length.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// The download's MD5 is not the published one.
    #[error("{url}: MD5 mismatch: expected {expected}, got {got}; the download was deleted (a corrupted transfer, or a mirror serving a different file)")]
    Checksum {
        /// The URL downloaded.
        url: String,
        /// Published MD5.
        expected: String,
        /// MD5 of what arrived.
        got: String,
    },
    /// A local file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The verified archive could not be read as tar.gz.
    #[error("{url}: not a readable tar.gz archive: {source}")]
    Archive {
        /// Where the archive came from.
        url: String,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// An archive entry that would land outside the destination, or a link.
    #[error("{url}: refusing to unpack entry '{entry}': {reason}; nothing was unpacked")]
    UnsafeEntry {
        /// Where the archive came from.
        url: String,
        /// The entry's path as stored.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An archive without the files the dataset needs.
    #[error("{url}: archive lacks {}; expected a folder {root}/ holding {}", missing.join(", "), expected.join(", "))]
    MissingMembers {
        /// Where the archive came from.
        url: String,
        /// The folder expected.
        root: String,
        /// Members not found.
        missing: Vec<String>,
        /// All members expected.
        expected: Vec<String>,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn files(list: &[(&str, &str)]) -> Vec<RemoteFile> {
    list.iter()
        .map(|(name, md5)| RemoteFile {
            name: (*name).to_string(),
            md5: (*md5).to_string(),
        })
        .collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

/// The official downloads of every dataset in [`DATASET_NAMES`].
pub fn registry() -> Vec<ArchiveSpec> {
    vec![
        ArchiveSpec {
            name: "cifar10".into(),
            base_url: "https://www.cs.toronto.edu/~kriz/".into(),
            // MD5 from the dataset page, https://www.cs.toronto.edu/~kriz/cifar.html
            // ("CIFAR-10 binary version (suitable for C programs)").
            files: files(&[("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")]),
            packing: Packing::TarGz {
                root: "cifar-10-batches-bin".into(),
                members: strings(&[
                    "data_batch_1.bin",
                    "data_batch_2.bin",
                    "data_batch_3.bin",
                    "data_batch_4.bin",
                    "data_batch_5.bin",
                    "test_batch.bin",
                ]),
            },
            installed: None,
        },
        ArchiveSpec {
            name: "cifar100".into(),
            base_url: "https://www.cs.toronto.edu/~kriz/".into(),
            // MD5 from the dataset page, https://www.cs.toronto.edu/~kriz/cifar.html
            // ("CIFAR-100 binary version (suitable for C programs)").
            files: files(&[(
                "cifar-100-binary.tar.gz",
                "03b5dce01913d631647c71ecec9e9cb8",
            )]),
            packing: Packing::TarGz {
                root: "cifar-100-binary".into(),
                members: strings(&["train.bin", "test.bin"]),
            },
            installed: None,
        },
        ArchiveSpec {
            name: "mnist".into(),
            // torchvision's MNIST mirror; yann.lecun.com no longer serves the files reliably.
            base_url: "https://ossci-datasets.s3.amazonaws.com/mnist/".into(),
            // MD5s from torchvision, torchvision/datasets/mnist.py, class MNIST, `resources`
            // (https://github.com/pytorch/vision).
            files: files(&[
                (
                    "train-images-idx3-ubyte.gz",
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "9fb629c4189551a2d022fa330f9573f3",
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
            ]),
            packing: Packing::Files {
                folder: "mnist".into(),
            },
            installed: None,
        },
        ArchiveSpec {
            name: "fashion-mnist".into(),
            // The mirror named in the Fashion-MNIST README (zalandoresearch/fashion-mnist).
            base_url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/".into(),
            // MD5s from torchvision, torchvision/datasets/mnist.py, class FashionMNIST,
            // `resources` (https://github.com/pytorch/vision); the same values are listed in
            // the Fashion-MNIST README.
            files: files(&[
                (
                    "train-images-idx3-ubyte.gz",
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "25c81989df183df01b3e8a0aad5dffbe",
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "bef4ecab320f06d8554ea6380940ec79",
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
            ]),
            packing: Packing::Files {
                folder: "fashion-mnist".into(),
            },
            installed: Some(Installed {
                dir: PathBuf::from("/usr/share/datasets/fashion-mnist"),
                package_md5sums: Some(PathBuf::from(
                    "/var/lib/dpkg/info/dataset-fashion-mnist.md5sums",
                )),
            }),
        },
    ]
}

/// The registry entry for `name`.
pub fn spec(name: &str) -> Result<ArchiveSpec, FetchError> {
    registry()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| FetchError::UnknownDataset {
            name: name.to_string(),
        })
}

/// Downloads dataset `name` into `dest_dir` (created if missing) and returns the folder
/// its reader takes. `base_url_override` replaces the host and folder (file names stay),
/// for mirrors and tests. `progress(done, total)` is called as bytes arrive, per file;
/// `total` is the announced size when the server gives one. A call that finds the
/// dataset present and verified downloads nothing.
pub fn fetch(
    name: &str,
    dest_dir: &Path,
    base_url_override: Option<&str>,
    progress: &dyn Fn(u64, Option<u64>),
) -> Result<PathBuf, FetchError> {
    fetch_with(&spec(name)?, dest_dir, base_url_override, progress)
}

/// [`fetch`] for any [`ArchiveSpec`], e.g. a private mirror with its own checksums.
pub fn fetch_with(
    spec: &ArchiveSpec,
    dest_dir: &Path,
    base_url_override: Option<&str>,
    progress: &dyn Fn(u64, Option<u64>),
) -> Result<PathBuf, FetchError> {
    check_spec(spec)?;
    let source = Source::parse(base_url_override.unwrap_or(&spec.base_url))?;
    fs::create_dir_all(dest_dir).map_err(io_err(dest_dir))?;
    match &spec.packing {
        Packing::TarGz { root, members } => {
            let target = dest_dir.join(root);
            // check_spec guarantees exactly one file for a tar.gz spec.
            let file = &spec.files[0];
            if unpacked_is_verified(&target, file, members) {
                return Ok(target);
            }
            let url = source.url(&file.name);
            let archive = TempPath::file(dest_dir, &file.name);
            source.get(&file.name, &archive.path, &file.md5, progress)?;
            let staging = TempPath::dir(dest_dir, root).map_err(io_err(dest_dir))?;
            let hashes = unpack(&archive.path, &staging.path, &url)?;
            drop(archive);
            let unpacked = staging.path.join(root);
            check_members(&url, root, members, &hashes)?;
            write_marker(&unpacked, file, &hashes)?;
            replace_dir(dest_dir, &unpacked, &target)?;
            Ok(target)
        }
        Packing::Files { folder } => {
            let target = dest_dir.join(folder);
            // An installed copy is used only when no mirror was asked for.
            let installed = spec
                .installed
                .as_ref()
                .filter(|_| base_url_override.is_none());
            for file in &spec.files {
                let path = target.join(&file.name);
                // A present file is trusted only after its checksum matches again (or, when
                // it is a link to an installed copy, after the package vouches for it again).
                if path.is_file() && md5_file(&path).is_ok_and(|m| m == file.md5) {
                    continue;
                }
                if let Some(from) = installed.and_then(|i| i.trusted(file)) {
                    fs::create_dir_all(&target).map_err(io_err(&target))?;
                    link_file(&from, &path)?;
                    continue;
                }
                // Fetched beside the folder and moved in only once verified, so a failed
                // first download leaves no empty dataset folder behind.
                let tmp = TempPath::file(dest_dir, &file.name);
                source.get(&file.name, &tmp.path, &file.md5, progress)?;
                fs::create_dir_all(&target).map_err(io_err(&target))?;
                fs::rename(&tmp.path, &path).map_err(io_err(&path))?;
                tmp.keep();
            }
            Ok(target)
        }
    }
}

/// `path` becomes a symbolic link to `from` (replacing a stale file or link there).
fn link_file(from: &Path, path: &Path) -> Result<(), FetchError> {
    let tmp = path.with_file_name(format!(
        ".{}.link-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(from, &tmp).map_err(io_err(&tmp))?;
    #[cfg(not(unix))]
    fs::copy(from, &tmp).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Where the files come from: a web server, or a folder on this machine (a mirror on a
/// shared disk, `file:///srv/datasets/cifar/`, or a plain path to an existing folder).
enum Source {
    Http { base: String, agent: ureq::Agent },
    Local(PathBuf),
}

impl Source {
    fn parse(url: &str) -> Result<Source, FetchError> {
        let bad = || FetchError::BadUrl {
            url: url.to_string(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            let dir = PathBuf::from(path);
            return if dir.is_absolute() && dir.is_dir() {
                Ok(Source::Local(dir))
            } else {
                Err(bad())
            };
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            let base = normalise_base(url)?;
            let agent = agent_for(&base);
            return Ok(Source::Http { base, agent });
        }
        let dir = PathBuf::from(url);
        if dir.is_dir() {
            Ok(Source::Local(dir))
        } else {
            Err(bad())
        }
    }

    /// The address of `name`, for messages.
    fn url(&self, name: &str) -> String {
        match self {
            Source::Http { base, .. } => format!("{base}{name}"),
            Source::Local(dir) => format!("file://{}", dir.join(name).display()),
        }
    }

    /// Fetches `name` to `to` and checks its MD5 (a mismatch is an error, `to` then holds
    /// the rejected bytes for the caller's temporary to delete).
    fn get(
        &self,
        name: &str,
        to: &Path,
        md5: &str,
        progress: &dyn Fn(u64, Option<u64>),
    ) -> Result<(), FetchError> {
        let url = self.url(name);
        match self {
            Source::Http { agent, .. } => {
                download(agent, &url, to, md5, MAX_DOWNLOAD_BYTES, progress)
            }
            Source::Local(dir) => {
                let from = dir.join(name);
                let file = File::open(&from).map_err(io_err(&from))?;
                let total = file.metadata().ok().map(|m| m.len());
                copy_verified(file, total, &url, to, md5, MAX_DOWNLOAD_BYTES, progress)
            }
        }
    }
}

fn check_spec(spec: &ArchiveSpec) -> Result<(), FetchError> {
    let bad = |reason: String| {
        Err(FetchError::InvalidSpec {
            name: spec.name.clone(),
            reason,
        })
    };
    if spec.files.is_empty() {
        return bad("no files listed".into());
    }
    if matches!(spec.packing, Packing::TarGz { .. }) && spec.files.len() != 1 {
        return bad(format!(
            "a tar.gz spec downloads exactly one archive, {} listed",
            spec.files.len()
        ));
    }
    let folder = match &spec.packing {
        Packing::TarGz { root, .. } => root,
        Packing::Files { folder } => folder,
    };
    for name in spec.files.iter().map(|f| &f.name).chain([folder]) {
        if !is_plain_name(name) {
            return bad(format!(
                "'{name}' must be a plain file or folder name (no '/', '\\\\', '..')"
            ));
        }
    }
    for f in &spec.files {
        if f.md5.len() != 32 || !f.md5.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad(format!(
                "MD5 of {} is '{}', expected 32 hex digits",
                f.name, f.md5
            ));
        }
    }
    Ok(())
}

/// A single path component that cannot climb out of the folder it is joined to.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.contains('\0')
}

fn normalise_base(url: &str) -> Result<String, FetchError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => {
            let mut u = url.to_string();
            if !u.ends_with('/') {
                u.push('/');
            }
            Ok(u)
        }
        _ => Err(FetchError::BadUrl {
            url: url.to_string(),
        }),
    }
}

fn agent_for(base: &str) -> ureq::Agent {
    agent_with(base, READ_TIMEOUT)
}

/// A mirror that stops sending for this long is given up on (the timeout restarts with every
/// read, so a slow but live download is never cut).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

fn agent_with(base: &str, read_timeout: Duration) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        // Statuses are checked here so that the error can name the URL.
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(BODY_TIMEOUT))
        .timeout_per_read(Some(read_timeout))
        .user_agent(concat!("cbound-data-fetch/", env!("CARGO_PKG_VERSION")));
    if is_loopback(base) {
        // A local mirror (or test server) must not be routed through an environment proxy.
        config = config.proxy(None);
    }
    config.build().new_agent()
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Streams `url` into `to` (which must not exist), hashing on the way, and keeps the file
/// only if the length and MD5 are right.
fn download(
    agent: &ureq::Agent,
    url: &str,
    to: &Path,
    md5: &str,
    max_bytes: u64,
    progress: &dyn Fn(u64, Option<u64>),
) -> Result<(), FetchError> {
    let mut response = agent.get(url).call().map_err(|e| FetchError::Transport {
        url: url.to_string(),
        source: Box::new(e),
    })?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(FetchError::Http {
            url: url.to_string(),
            status,
        });
    }
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_large = || FetchError::TooLarge {
        url: url.to_string(),
        limit: max_bytes,
    };
    if total.is_some_and(|t| t > max_bytes) {
        return Err(too_large());
    }
    let reader = response.body_mut().as_reader();
    copy_verified(reader, total, url, to, md5, max_bytes, progress)
}

/// Streams `reader` into a new file `to` (never overwriting one), stopping past
/// `max_bytes`, and checks the length against `total` (when known) and the MD5 against
/// `md5`. Shared by downloads and copies from a local mirror.
fn copy_verified(
    mut reader: impl Read,
    total: Option<u64>,
    url: &str,
    to: &Path,
    md5: &str,
    max_bytes: u64,
    progress: &dyn Fn(u64, Option<u64>),
) -> Result<(), FetchError> {
    let too_large = || FetchError::TooLarge {
        url: url.to_string(),
        limit: max_bytes,
    };
    // create_new: a name collision must fail rather than overwrite someone's file.
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(io_err(to))?;
    let mut out = BufWriter::with_capacity(BUF, file);
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; BUF];
    let mut done = 0u64;
    progress(0, total);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(FetchError::Read {
                    url: url.to_string(),
                    done,
                    source,
                })
            }
        };
        done += n as u64;
        if done > max_bytes {
            return Err(too_large());
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err(to))?;
        progress(done, total);
    }
    let file = out.into_inner().map_err(|e| FetchError::Io {
        path: to.to_path_buf(),
        source: e.into_error(),
    })?;
    // Durable before the rename that publishes it.
    file.sync_all().map_err(io_err(to))?;
    if let Some(expected) = total.filter(|&t| t != done) {
        return Err(FetchError::Length {
            url: url.to_string(),
            expected,
            got: done,
        });
    }
    let got = hex(&hasher.finalize());
    if !got.eq_ignore_ascii_case(md5) {
        return Err(FetchError::Checksum {
            url: url.to_string(),
            expected: md5.to_ascii_lowercase(),
            got,
        });
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex MD5 of a file.
pub fn md5_file(path: &Path) -> Result<String, FetchError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(path)(e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Why an entry path may not be unpacked, if it may not.
fn unsafe_reason(path: &Path) -> Option<&'static str> {
    let mut normal = 0;
    for c in path.components() {
        match c {
            Component::Normal(_) => normal += 1,
            Component::CurDir => {}
            Component::ParentDir => return Some("its path contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Some("its path is absolute"),
        }
    }
    (normal == 0).then_some("its path is empty")
}

/// Unpacks a tar.gz into `staging` and returns (path relative to staging, MD5) of every
/// regular file. Every entry is checked before anything is written for it, and files are
/// written by this code (not the tar crate's unpack) so that no mode bits, owners or link
/// targets from the archive are applied.
fn unpack(archive: &Path, staging: &Path, url: &str) -> Result<Vec<(String, String)>, FetchError> {
    let bad_archive = |source: io::Error| FetchError::Archive {
        url: url.to_string(),
        source,
    };
    let f = File::open(archive).map_err(io_err(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(f)));
    let mut hashes = Vec::new();
    for entry in tar.entries().map_err(bad_archive)? {
        let mut entry = entry.map_err(bad_archive)?;
        let rel = entry.path().map_err(bad_archive)?.into_owned();
        let shown = rel.display().to_string();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        if let Some(reason) = unsafe_reason(&rel) {
            return Err(FetchError::UnsafeEntry {
                url: url.to_string(),
                entry: shown,
                reason,
            });
        }
        let dest = staging.join(&rel);
        if kind.is_dir() {
            fs::create_dir_all(&dest).map_err(io_err(&dest))?;
        } else if kind.is_file() || kind.is_contiguous() {
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let out = File::options()
                .write(true)
                .create_new(true)
                .open(&dest)
                .map_err(io_err(&dest))?;
            let mut out = BufWriter::with_capacity(BUF, out);
            let mut hasher = Md5::new();
            let mut buf = vec![0u8; BUF];
            loop {
                let n = match entry.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(bad_archive(e)),
                };
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io_err(&dest))?;
            }
            out.flush().map_err(io_err(&dest))?;
            let key = rel
                .components()
                .filter_map(|c| match c {
                    Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("/");
            hashes.push((key, hex(&hasher.finalize())));
        } else {
            return Err(FetchError::UnsafeEntry {
                url: url.to_string(),
                entry: shown,
                reason: "only regular files and folders are unpacked (links and devices are not)",
            });
        }
    }
    Ok(hashes)
}

fn check_members(
    url: &str,
    root: &str,
    members: &[String],
    hashes: &[(String, String)],
) -> Result<(), FetchError> {
    let missing: Vec<String> = members
        .iter()
        .filter(|m| !hashes.iter().any(|(k, _)| *k == format!("{root}/{m}")))
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(FetchError::MissingMembers {
            url: url.to_string(),
            root: root.to_string(),
            missing,
            expected: members.to_vec(),
        })
    }
}

/// Writes the checksum list of the files under `dir` (md5sum format, paths relative to it).
fn write_marker(
    dir: &Path,
    archive: &RemoteFile,
    hashes: &[(String, String)],
) -> Result<(), FetchError> {
    let root = dir
        .file_name()
        .map(|s| format!("{}/", s.to_string_lossy()))
        .unwrap_or_default();
    let mut text = format!("# {} {}\n", archive.md5, archive.name);
    for (key, md5) in hashes {
        if let Some(rel) = key.strip_prefix(&root) {
            text.push_str(&format!("{md5}  {rel}\n"));
        }
    }
    let path = dir.join(MARKER_FILE);
    fs::write(&path, text).map_err(io_err(&path))
}

/// True when `dir` holds a checksum list from this archive that names every required
/// member and every listed file still has its recorded MD5. Any doubt means false, and
/// false only means "fetch again".
fn unpacked_is_verified(dir: &Path, archive: &RemoteFile, members: &[String]) -> bool {
    let Ok(text) = fs::read_to_string(dir.join(MARKER_FILE)) else {
        return false;
    };
    let mut lines = text.lines();
    if lines.next() != Some(format!("# {} {}", archive.md5, archive.name).as_str()) {
        return false;
    }
    let mut listed = Vec::new();
    for line in lines {
        let Some((md5, rel)) = line.split_once("  ") else {
            return false;
        };
        let safe = unsafe_reason(Path::new(rel)).is_none();
        if !safe || md5_file(&dir.join(rel)).map_or(true, |m| m != md5) {
            return false;
        }
        listed.push(rel);
    }
    members.iter().all(|m| listed.contains(&m.as_str()))
}

/// Moves `new` to `target`, replacing what is there. Renames only, so `target` is always
/// either the old complete folder or the new one.
fn replace_dir(dest_dir: &Path, new: &Path, target: &Path) -> Result<(), FetchError> {
    if fs::symlink_metadata(target).is_ok() {
        // A directory cannot be renamed over a non-empty one: move the old one aside first.
        let name = target
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let old = TempPath::file(dest_dir, &format!("{name}.old"));
        fs::rename(target, &old.path).map_err(io_err(target))?;
        if let Err(e) = fs::rename(new, target) {
            // Put the previous copy back rather than leave nothing in its place.
            if fs::rename(&old.path, target).is_ok() {
                old.keep();
            }
            return Err(io_err(target)(e));
        }
        // `old` is removed on drop.
        return Ok(());
    }
    fs::rename(new, target).map_err(io_err(target))
}

/// A temporary file or folder in the destination, removed on drop unless kept.
struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    /// A fresh name in `dir` (nothing is created). Hidden, and unique per process and call,
    /// so concurrent fetches and leftovers of killed runs never collide.
    fn file(dir: &Path, stem: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        TempPath {
            path: dir.join(format!(".{stem}.part-{}-{n}-{nanos}", std::process::id())),
            keep: false,
        }
    }

    /// A fresh, created folder in `dir`.
    fn dir(dir: &Path, stem: &str) -> io::Result<Self> {
        let t = TempPath::file(dir, stem);
        fs::create_dir(&t.path)?;
        Ok(t)
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Best effort: the path may never have been created, or already renamed away.
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir_all(&self.path);
            }
            Ok(_) => {
                let _ = fs::remove_file(&self.path);
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::Instant;

    /// A minimal HTTP/1.1 server on 127.0.0.1: one request per connection, fixed bodies,
    /// 404 for anything else. It stops by itself after `max_requests` requests or 30 s,
    /// and when dropped.
    struct Server {
        base: String,
        requests: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<()>>,
    }

    impl Server {
        fn start(routes: HashMap<String, Vec<u8>>, max_requests: usize) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr: SocketAddr = listener.local_addr().unwrap();
            listener.set_nonblocking(true).unwrap();
            let requests = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (r, s) = (requests.clone(), stop.clone());
            let handle = std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                while r.load(Ordering::SeqCst) < max_requests
                    && !s.load(Ordering::SeqCst)
                    && Instant::now() < deadline
                {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            r.fetch_add(1, Ordering::SeqCst);
                            respond(stream, &routes);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
            });
            Server {
                base: format!("http://{addr}/files/"),
                requests,
                stop,
                handle: Some(handle),
            }
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }

    fn respond(mut stream: TcpStream, routes: &HashMap<String, Vec<u8>>) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        // Read the request head, at most 16 KiB.
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&head);
        let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
        let (status, body): (&str, &[u8]) = match routes.get(&path) {
            Some(b) => ("200 OK", b),
            None => ("404 Not Found", b"not found"),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(body);
        let _ = stream.flush();
    }

    fn md5_of(bytes: &[u8]) -> String {
        hex(&Md5::digest(bytes))
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// A tar.gz laid out like the CIFAR-10 binary archive, with 3 records per batch, plus
    /// raw entries (name, data) written with unchecked names.
    fn cifar_like(raw: &[(&str, &[u8])]) -> (Vec<u8>, HashMap<String, Vec<u8>>) {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o755);
        b.append_data(&mut dir, "cifar-10-batches-bin/", io::empty())
            .unwrap();
        let mut contents = HashMap::new();
        let names = [
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin",
            "batches.meta.txt",
        ];
        for (i, name) in names.iter().enumerate() {
            let data: Vec<u8> = if name.ends_with(".txt") {
                b"airplane\nautomobile\n".to_vec()
            } else {
                (0..3 * 3073).map(|j| ((i * 7 + j) % 251) as u8).collect()
            };
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, format!("cifar-10-batches-bin/{name}"), &data[..])
                .unwrap();
            contents.insert((*name).to_string(), data);
        }
        for (name, data) in raw {
            let mut h = tar::Header::new_gnu();
            // Written straight into the header: the builder itself refuses such names.
            let field = &mut h.as_old_mut().name;
            field.fill(0);
            field[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        (gzip(&b.into_inner().unwrap()), contents)
    }

    fn cifar_spec(md5: &str) -> ArchiveSpec {
        let mut s = spec("cifar10").unwrap();
        s.files[0].md5 = md5.to_string();
        s
    }

    fn routes(files: &[(&str, &[u8])]) -> HashMap<String, Vec<u8>> {
        files
            .iter()
            .map(|(n, b)| (format!("/files/{n}"), b.to_vec()))
            .collect()
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn quiet(_: u64, _: Option<u64>) {}

    #[test]
    fn downloads_verifies_unpacks_and_is_idempotent() {
        let (archive, contents) = cifar_like(&[]);
        let server = Server::start(routes(&[("cifar-10-binary.tar.gz", &archive)]), 10);
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("data");
        let spec = cifar_spec(&md5_of(&archive));
        let seen = Mutex::new(Vec::new());
        let progress = |done: u64, total: Option<u64>| seen.lock().unwrap().push((done, total));

        let dir = fetch_with(&spec, &dest, Some(&server.base), &progress).unwrap();
        assert_eq!(dir, dest.join("cifar-10-batches-bin"));
        for (name, data) in &contents {
            assert_eq!(&fs::read(dir.join(name)).unwrap(), data, "{name}");
        }
        // Nothing but the dataset folder is left in the destination.
        assert_eq!(listing(&dest), ["cifar-10-batches-bin"]);
        let n = archive.len() as u64;
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.first(), Some(&(0, Some(n))));
        assert_eq!(seen.last(), Some(&(n, Some(n))));
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(dir.join(MARKER_FILE).is_file());
        assert_eq!(server.requests(), 1);

        // Present and verified: no request at all.
        let again = fetch_with(&spec, &dest, Some(&server.base), &quiet).unwrap();
        assert_eq!(again, dir);
        assert_eq!(server.requests(), 1);

        // A damaged member is noticed and the folder replaced whole.
        fs::write(dir.join("data_batch_3.bin"), b"oops").unwrap();
        fetch_with(&spec, &dest, Some(&server.base), &quiet).unwrap();
        assert_eq!(server.requests(), 2);
        assert_eq!(
            fs::read(dir.join("data_batch_3.bin")).unwrap(),
            contents["data_batch_3.bin"]
        );
        assert_eq!(listing(&dest), ["cifar-10-batches-bin"]);
    }

    #[test]
    fn corrupted_download_is_refused_and_deleted() {
        let (archive, _) = cifar_like(&[]);
        let good_md5 = md5_of(&archive);
        let mut bad = archive.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x01;
        let server = Server::start(routes(&[("cifar-10-binary.tar.gz", &bad)]), 10);
        let tmp = tempfile::tempdir().unwrap();
        let err = fetch_with(
            &cifar_spec(&good_md5),
            tmp.path(),
            Some(&server.base),
            &quiet,
        )
        .unwrap_err();
        match &err {
            FetchError::Checksum { url, expected, got } => {
                assert!(url.ends_with("/files/cifar-10-binary.tar.gz"), "{url}");
                assert_eq!(expected, &good_md5);
                assert_eq!(got, &md5_of(&bad));
            }
            other => panic!("expected a checksum error, got {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&good_md5) && msg.contains(&md5_of(&bad)),
            "{msg}"
        );
        assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));
    }

    #[test]
    fn a_stalled_mirror_ends_in_an_error_not_a_hang() {
        // Headers and half the body, then silence (the connection stays open).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = std::io::Read::read(&mut stream, &mut buf);
                let _ =
                    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
                std::thread::sleep(Duration::from_secs(2));
            }
        });
        let base = format!("http://127.0.0.1:{port}/");
        let agent = agent_with(&base, Duration::from_millis(500));
        let tmp = tempfile::tempdir().unwrap();
        let err = download(
            &agent,
            &format!("{base}x.bin"),
            &tmp.path().join("x.bin"),
            "00",
            MAX_DOWNLOAD_BYTES,
            &|_, _| {},
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::Read { done: 10, .. } | FetchError::Transport { .. }
            ),
            "{err}"
        );
        server.join().unwrap();
    }

    #[test]
    fn a_body_over_the_limit_is_stopped_and_deleted() {
        let body = vec![7u8; 5000];
        let server = Server::start(routes(&[("big.bin", &body)]), 10);
        let tmp = tempfile::tempdir().unwrap();
        let to = tmp.path().join("big.bin");
        let agent = agent_for(&server.base);
        let url = format!("{}big.bin", server.base);
        let err = download(&agent, &url, &to, &md5_of(&body), 1000, &|_, _| {}).unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit: 1000, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("exceeds 1000 bytes"), "{err}");
        // The same body under a limit that fits goes through.
        let ok = tmp.path().join("ok.bin");
        download(&agent, &url, &ok, &md5_of(&body), 10_000, &|_, _| {}).unwrap();
        assert_eq!(std::fs::read(&ok).unwrap(), body);
    }

    #[test]
    fn missing_file_is_a_clear_http_error() {
        let server = Server::start(HashMap::new(), 10);
        let tmp = tempfile::tempdir().unwrap();
        let err = fetch("mnist", tmp.path(), Some(&server.base), &quiet).unwrap_err();
        let want = format!("{}train-images-idx3-ubyte.gz", server.base);
        assert!(
            matches!(&err, FetchError::Http { url, status: 404 } if *url == want),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&want) && msg.contains("404"), "{msg}");
        assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));
    }

    #[test]
    fn unreachable_server_names_the_url() {
        // A port that was free a moment ago: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}/");
        let tmp = tempfile::tempdir().unwrap();
        let err = fetch("cifar100", tmp.path(), Some(&base), &quiet).unwrap_err();
        assert!(matches!(err, FetchError::Transport { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("{base}cifar-100-binary.tar.gz")),
            "{err}"
        );
        assert!(listing(tmp.path()).is_empty());
    }

    #[test]
    fn traversal_and_absolute_entries_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("data");
        for evil in [
            "cifar-10-batches-bin/../../evil.bin",
            "/tmp/cbound-evil.bin",
        ] {
            let (archive, _) = cifar_like(&[(evil, b"pwned")]);
            let server = Server::start(routes(&[("cifar-10-binary.tar.gz", &archive)]), 10);
            let err = fetch_with(
                &cifar_spec(&md5_of(&archive)),
                &dest,
                Some(&server.base),
                &quiet,
            )
            .unwrap_err();
            match &err {
                FetchError::UnsafeEntry { entry, .. } => assert_eq!(entry, evil),
                other => panic!("expected an unsafe-entry error, got {other}"),
            }
            assert!(listing(&dest).is_empty(), "{:?}", listing(&dest));
            assert!(!tmp.path().join("evil.bin").exists());
        }
        assert!(!Path::new("/tmp/cbound-evil.bin").exists());
    }

    #[test]
    fn links_and_incomplete_archives_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        // A symlink entry.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(
            &mut h,
            "cifar-10-batches-bin/data_batch_1.bin",
            "/etc/passwd",
        )
        .unwrap();
        let archive = gzip(&b.into_inner().unwrap());
        let server = Server::start(routes(&[("cifar-10-binary.tar.gz", &archive)]), 10);
        let err = fetch_with(
            &cifar_spec(&md5_of(&archive)),
            tmp.path(),
            Some(&server.base),
            &quiet,
        )
        .unwrap_err();
        assert!(matches!(err, FetchError::UnsafeEntry { .. }), "{err}");
        assert!(listing(tmp.path()).is_empty());

        // An archive without the test batch.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        b.append_data(&mut h, "cifar-10-batches-bin/data_batch_1.bin", &b"abc"[..])
            .unwrap();
        let archive = gzip(&b.into_inner().unwrap());
        let server = Server::start(routes(&[("cifar-10-binary.tar.gz", &archive)]), 10);
        let err = fetch_with(
            &cifar_spec(&md5_of(&archive)),
            tmp.path(),
            Some(&server.base),
            &quiet,
        )
        .unwrap_err();
        match &err {
            FetchError::MissingMembers { missing, .. } => {
                assert!(missing.contains(&"test_batch.bin".to_string()), "{err}");
                assert!(!missing.contains(&"data_batch_1.bin".to_string()), "{err}");
            }
            other => panic!("expected missing members, got {other}"),
        }
        assert!(listing(tmp.path()).is_empty());
    }

    #[test]
    fn gz_files_are_kept_as_downloaded() {
        let payloads: Vec<(String, Vec<u8>)> = spec("fashion-mnist")
            .unwrap()
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), gzip(&vec![i as u8; 100 + i])))
            .collect();
        let mut s = spec("fashion-mnist").unwrap();
        for (f, (_, data)) in s.files.iter_mut().zip(&payloads) {
            f.md5 = md5_of(data);
        }
        let pairs: Vec<(&str, &[u8])> = payloads
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let server = Server::start(routes(&pairs), 20);
        let tmp = tempfile::tempdir().unwrap();
        // No trailing slash on the override: it is added.
        let base = server.base.trim_end_matches('/').to_string();
        let dir = fetch_with(&s, tmp.path(), Some(&base), &quiet).unwrap();
        assert_eq!(dir, tmp.path().join("fashion-mnist"));
        for (name, data) in &payloads {
            assert_eq!(&fs::read(dir.join(name)).unwrap(), data, "{name}");
        }
        assert_eq!(listing(&dir).len(), 4, "{:?}", listing(&dir));
        assert_eq!(server.requests(), 4);
        // Verified files are not fetched again; a damaged one is.
        fetch_with(&s, tmp.path(), Some(&base), &quiet).unwrap();
        assert_eq!(server.requests(), 4);
        fs::write(dir.join(&payloads[2].0), b"x").unwrap();
        fetch_with(&s, tmp.path(), Some(&base), &quiet).unwrap();
        assert_eq!(server.requests(), 5);
        assert_eq!(fs::read(dir.join(&payloads[2].0)).unwrap(), payloads[2].1);
        assert_eq!(listing(&dir).len(), 4, "{:?}", listing(&dir));
    }

    /// Four small gz files and a fashion-mnist spec whose checksums are theirs.
    fn small_fashion() -> (ArchiveSpec, Vec<(String, Vec<u8>)>) {
        let mut s = spec("fashion-mnist").unwrap();
        let payloads: Vec<(String, Vec<u8>)> = s
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), gzip(&vec![i as u8; 50 + i])))
            .collect();
        for (f, (_, data)) in s.files.iter_mut().zip(&payloads) {
            f.md5 = md5_of(data);
        }
        (s, payloads)
    }

    #[test]
    fn a_local_folder_or_file_url_is_a_mirror_and_checked_like_one() {
        let (s, payloads) = small_fashion();
        let mirror = tempfile::tempdir().unwrap();
        for (name, data) in &payloads {
            fs::write(mirror.path().join(name), data).unwrap();
        }
        let as_url = format!("file://{}", mirror.path().display());
        let as_path = mirror.path().display().to_string();
        for base in [as_url.as_str(), as_path.as_str()] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = fetch_with(&s, tmp.path(), Some(base), &quiet).unwrap();
            for (name, data) in &payloads {
                assert_eq!(&fs::read(dir.join(name)).unwrap(), data, "{base}: {name}");
                assert!(!fs::symlink_metadata(dir.join(name)).unwrap().is_symlink());
            }
        }
        // A damaged file in the mirror is refused by its checksum, and nothing is left.
        fs::write(mirror.path().join(&payloads[1].0), b"damaged").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let err = fetch_with(&s, tmp.path(), Some(&as_url), &quiet).unwrap_err();
        assert!(matches!(err, FetchError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains("file://"), "{err}");
        // A file:// URL must name an existing folder.
        let err = fetch_with(&s, tmp.path(), Some("file:///no/such/folder"), &quiet).unwrap_err();
        assert!(matches!(err, FetchError::BadUrl { .. }), "{err}");
    }

    #[test]
    fn installed_files_are_linked_when_their_checksums_match() {
        let (mut s, payloads) = small_fashion();
        let installed = tempfile::tempdir().unwrap();
        // Three of four installed, one with other bytes: those are linked, the rest fetched.
        for (name, data) in &payloads[..2] {
            fs::write(installed.path().join(name), data).unwrap();
        }
        fs::write(installed.path().join(&payloads[2].0), b"other").unwrap();
        // The fourth is not the official bytes but the package's list vouches for it.
        let repacked = gzip(b"repacked by the distribution");
        fs::write(installed.path().join(&payloads[3].0), &repacked).unwrap();
        let list = installed.path().join("pkg.md5sums");
        let rel = installed.path().join(&payloads[3].0);
        let rel = rel.strip_prefix("/").unwrap();
        fs::write(&list, format!("{}  {}\n", md5_of(&repacked), rel.display())).unwrap();
        s.installed = Some(Installed {
            dir: installed.path().to_path_buf(),
            package_md5sums: Some(list),
        });
        let pairs: Vec<(&str, &[u8])> = payloads
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let server = Server::start(routes(&pairs), 20);
        s.base_url = server.base.clone();
        let tmp = tempfile::tempdir().unwrap();
        let dir = fetch_with(&s, tmp.path(), None, &quiet).unwrap();
        assert_eq!(
            server.requests(),
            1,
            "only the one installed with other bytes is downloaded"
        );
        for (i, (name, data)) in payloads.iter().enumerate() {
            let link = fs::symlink_metadata(dir.join(name)).unwrap().is_symlink();
            assert_eq!(link, i != 2, "{name}");
            if i != 3 {
                assert_eq!(&fs::read(dir.join(name)).unwrap(), data, "{name}");
            }
        }
        assert_eq!(fs::read(dir.join(&payloads[3].0)).unwrap(), repacked);
        // Present and vouched for: nothing is fetched again.
        fetch_with(&s, tmp.path(), None, &quiet).unwrap();
        assert_eq!(server.requests(), 1);
        // A vouched-for file that changes after installation is no longer trusted.
        fs::write(installed.path().join(&payloads[3].0), b"edited").unwrap();
        fetch_with(&s, tmp.path(), None, &quiet).unwrap();
        assert_eq!(server.requests(), 2);
        assert_eq!(fs::read(dir.join(&payloads[3].0)).unwrap(), payloads[3].1);
        // With a mirror asked for, the installed copy is not used.
        let other = tempfile::tempdir().unwrap();
        fetch_with(&s, other.path(), Some(&server.base), &quiet).unwrap();
        assert_eq!(server.requests(), 6);
    }

    #[test]
    fn registry_and_arguments_are_checked() {
        let reg = registry();
        let names: Vec<&str> = reg.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, DATASET_NAMES);
        for s in &reg {
            check_spec(s).unwrap();
            assert!(s.base_url.ends_with('/'), "{}", s.base_url);
        }
        assert_eq!(
            spec("mnist").unwrap().files[0].md5,
            "f68b3c2dcbeaaa9fbdd348bbdeb94873"
        );

        let tmp = tempfile::tempdir().unwrap();
        let err = fetch("imagenet", tmp.path(), None, &quiet).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected one of cifar10, cifar100, mnist, fashion-mnist"),
            "{err}"
        );
        for bad in [
            "ftp://x/",
            "example.org/data",
            "http://",
            "https:///x",
            "file://relative/x",
        ] {
            let err = fetch("mnist", tmp.path(), Some(bad), &quiet).unwrap_err();
            assert!(matches!(err, FetchError::BadUrl { .. }), "{bad}: {err}");
        }
        let mut s = spec("cifar10").unwrap();
        s.files[0].name = "../x.tar.gz".into();
        assert!(matches!(
            fetch_with(&s, tmp.path(), None, &quiet),
            Err(FetchError::InvalidSpec { .. })
        ));
        assert!(listing(tmp.path()).is_empty());

        assert!(is_loopback("http://127.0.0.1:8080/x/"));
        assert!(is_loopback("http://localhost/"));
        assert!(is_loopback("http://[::1]:9/"));
        assert!(!is_loopback("https://www.cs.toronto.edu/~kriz/"));
    }
}
