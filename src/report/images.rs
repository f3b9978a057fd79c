//! Images that stage kinds declare among their outputs (a kind declared in YAML listing
//! `pca.png` in `produces`), embedded in report.html beside cbound's own plots.
//!
//! Only declared files are taken, never whatever an instance happens to have written, so the
//! report shows what the kind promises. They are embedded as `data:` URIs in `<img>`, which
//! keeps the page a single file and never runs anything an SVG might contain.

use std::path::Path;

use super::load::Run;
use cbound_engine::stage::Registry;

/// Larger images are left out with a note: the page is meant to be mailed and archived.
const MAX_IMAGE_BYTES: u64 = 8 << 20;

/// One declared image of one finished instance.
#[derive(Debug, Clone)]
pub struct Image {
    pub stage: String,
    pub instance: String,
    /// Its name among the instance's outputs.
    pub file: String,
    pub mime: &'static str,
    pub bytes: Vec<u8>,
}

fn mime_of(file: &str) -> Option<&'static str> {
    if file.ends_with(".png") {
        Some("image/png")
    } else if file.ends_with(".svg") {
        Some("image/svg+xml")
    } else {
        None
    }
}

/// Standard base64 with padding (RFC 4648), for `data:` URIs.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Image {
    pub fn data_uri(&self) -> String {
        format!("data:{};base64,{}", self.mime, base64(&self.bytes))
    }
}

/// The PNG and SVG files each finished instance's kind declares it writes, in run order;
/// unreadable or oversized ones become notes.
pub fn declared_images(run: &Run, registry: &Registry, notes: &mut Vec<String>) -> Vec<Image> {
    let mut images = Vec::new();
    for inst in &run.instances {
        let Some(declared) = registry.get(&inst.kind).and_then(|k| k.writes()) else {
            continue;
        };
        let wanted: Vec<(&str, &'static str)> = declared
            .iter()
            .filter_map(|f| mime_of(f).map(|m| (*f, m)))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        if !inst.has_result() {
            notes.push(format!(
                "{} is {}: its images are left out",
                inst.instance, inst.status
            ));
            continue;
        }
        for (file, mime) in wanted {
            let path = inst.dir.join(file);
            match read_image(&path) {
                Ok(bytes) => images.push(Image {
                    stage: inst.stage.clone(),
                    instance: inst.instance.clone(),
                    file: file.to_string(),
                    mime,
                    bytes,
                }),
                Err(why) => notes.push(format!("{}: image {file} left out: {why}", inst.instance)),
            }
        }
    }
    images
}

fn read_image(path: &Path) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_IMAGE_BYTES {
        return Err(format!(
            "{size} bytes, over the {MAX_IMAGE_BYTES} a report embeds"
        ));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }
}
