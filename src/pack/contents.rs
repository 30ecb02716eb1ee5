//! The plaintext of a pack, framed so it streams: a length-delimited
//! protobuf `Manifest` (the record, the raw CTF `<Pupil>` element, the list
//! of attachments), then each attachment's bytes in order. Readers check
//! every size and SHA-256 as they go; nothing here touches the file system.

use std::io::{self, Read, Write};

use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::api::v1;
use crate::digest::Sha256Stream;
use crate::record::TransitionRecord;

/// The largest manifest a reader accepts (the record, the CTF fragment and
/// the attachment list; attachment bytes are not part of it).
pub const MAX_MANIFEST_LEN: u64 = 16 * 1024 * 1024;

/// Names a pack folder reserves for itself: never attachment names.
pub const RESERVED_NAMES: &[&str] = &["record.json", "pack.json"];

/// The first frame of a pack's plaintext.
#[derive(Clone, PartialEq, Default)]
pub struct Manifest {
    /// The pupil's transition record.
    pub record: TransitionRecord,
    /// The `<Pupil>` element exactly as the sending MIS wrote it, if any.
    pub ctf_pupil_xml: Option<String>,
    /// The attachments that follow, in order.
    pub attachments: Vec<AttachmentMeta>,
}

/// Redacted: a manifest holds a pupil's record.
impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Manifest {{ attachments: {}, .. }}",
            self.attachments.len()
        )
    }
}

/// What the manifest says about one attachment.
#[derive(Clone, PartialEq, Eq)]
pub struct AttachmentMeta {
    /// File name without directories.
    pub name: String,
    /// Media type.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
}

/// Redacted: an attachment's name may name a child.
impl std::fmt::Debug for AttachmentMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AttachmentMeta {{ size: {}, media_type: {:?}, .. }}",
            self.size, self.media_type
        )
    }
}

/// What can go wrong framing or reading a pack's plaintext. Messages name
/// attachments by position, never by name (a name may identify a pupil).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContentsError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The plaintext ended early.
    #[error("the pack's contents end early")]
    Truncated,
    /// The manifest is larger than [`MAX_MANIFEST_LEN`].
    #[error("the pack's manifest is larger than {MAX_MANIFEST_LEN} bytes")]
    ManifestTooLarge,
    /// The manifest does not decode.
    #[error("the pack's manifest is malformed: {0}")]
    Malformed(String),
    /// An attachment's bytes do not match its size or hash.
    #[error("attachment {index} does not match its size and SHA-256")]
    AttachmentMismatch {
        /// 1-based position in the manifest.
        index: usize,
    },
    /// An attachment's source gave more or fewer bytes than when it was listed.
    #[error("attachment {index} changed while the pack was being sealed")]
    AttachmentChanged {
        /// 1-based position in the manifest.
        index: usize,
    },
    /// An attachment name is not a plain, safe file name.
    #[error("attachment {index} has an unsafe name: {problem}")]
    BadName {
        /// 1-based position in the manifest.
        index: usize,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Bytes follow the last attachment.
    #[error("the pack's contents continue past the last attachment")]
    TrailingData,
}

impl AttachmentMeta {
    /// Describes `reader`'s bytes (reading them all once to size and hash them).
    pub fn describe(name: &str, reader: &mut impl Read) -> io::Result<Self> {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Self {
            name: name.to_string(),
            media_type: media_type_for(name).to_string(),
            size,
            sha256: hasher.finalize().into(),
        })
    }
}

/// A media type from a file name's extension.
pub fn media_type_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "txt" | "md" => "text/plain",
        "csv" => "text/csv",
        "xml" => "application/xml",
        "json" => "application/json",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "odt" => "application/vnd.oasis.opendocument.text",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        _ => "application/octet-stream",
    }
}

/// Checks an attachment name is a plain file name that is safe to create in
/// a pack folder on any platform.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.trim().is_empty() {
        return Err("it is empty");
    }
    if name.len() > 255 {
        return Err("it is longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return Err("it is a directory reference");
    }
    if name.contains(['/', '\\', '\0', ':']) || name.chars().any(char::is_control) {
        return Err("it contains a path separator or control character");
    }
    if name.starts_with('.') {
        return Err("it is a hidden file name");
    }
    if RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err("record.json and pack.json are reserved in a pack folder");
    }
    Ok(())
}

/// Checks every attachment name, and that no two are the same.
pub fn check_names(attachments: &[AttachmentMeta]) -> Result<(), ContentsError> {
    let mut seen = std::collections::HashSet::new();
    for (i, a) in attachments.iter().enumerate() {
        check_name(&a.name).map_err(|problem| ContentsError::BadName {
            index: i + 1,
            problem,
        })?;
        if !seen.insert(a.name.to_lowercase()) {
            return Err(ContentsError::BadName {
                index: i + 1,
                problem: "another attachment has the same name",
            });
        }
    }
    Ok(())
}

/// Writes the manifest frame.
pub fn write_manifest(out: &mut impl Write, manifest: &Manifest) -> Result<(), ContentsError> {
    check_names(&manifest.attachments)?;
    let bytes = v1::Manifest::from(manifest.clone()).encode_length_delimited_to_vec();
    out.write_all(&bytes)?;
    Ok(())
}

/// Reads the manifest frame.
pub fn read_manifest(input: &mut impl Read) -> Result<Manifest, ContentsError> {
    let len = read_varint(input)?;
    if len > MAX_MANIFEST_LEN {
        return Err(ContentsError::ManifestTooLarge);
    }
    let mut bytes = Vec::new();
    input.take(len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(ContentsError::Truncated);
    }
    let wire = v1::Manifest::decode(bytes.as_slice())
        .map_err(|e| ContentsError::Malformed(e.to_string()))?;
    let manifest = Manifest::try_from(wire).map_err(|e| ContentsError::Malformed(e.to_string()))?;
    check_names(&manifest.attachments)?;
    Ok(manifest)
}

/// Copies exactly `meta.size` bytes of attachment `index` (1-based) from
/// `input` to `out`, and checks their SHA-256. On a mismatch the bytes have
/// been written already: the caller must discard `out`.
pub fn copy_attachment(
    input: &mut impl Read,
    out: &mut dyn Write,
    meta: &AttachmentMeta,
    index: usize,
) -> Result<(), ContentsError> {
    let mut hasher = Sha256Stream::new();
    let mut remaining = meta.size;
    let mut buf = vec![0u8; 64 * 1024];
    while remaining > 0 {
        let want = usize::try_from(remaining.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(ContentsError::Truncated);
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        remaining -= n as u64;
    }
    let digest = hasher
        .finalize()
        .ok_or_else(|| io::Error::other("the hashing thread failed"))?;
    if digest != meta.sha256 {
        return Err(ContentsError::AttachmentMismatch { index });
    }
    Ok(())
}

/// Checks `input` has nothing left.
pub fn expect_end(input: &mut impl Read) -> Result<(), ContentsError> {
    let mut byte = [0u8; 1];
    match input.read(&mut byte)? {
        0 => Ok(()),
        _ => Err(ContentsError::TrailingData),
    }
}

fn read_varint(input: &mut impl Read) -> Result<u64, ContentsError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8; 1];
        if input.read(&mut byte)? == 0 {
            return Err(ContentsError::Truncated);
        }
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ContentsError::Malformed(
        "manifest length is not a varint".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Manifest, Vec<Vec<u8>>) {
        let files = vec![b"first".to_vec(), Vec::new(), vec![7u8; 200_000]];
        let attachments = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                AttachmentMeta::describe(&format!("file-{i}.pdf"), &mut f.as_slice()).unwrap()
            })
            .collect();
        let manifest = Manifest {
            record: crate::record::tests::valid_record(),
            ctf_pupil_xml: Some("<Pupil><UPN>x</UPN></Pupil>".into()),
            attachments,
        };
        (manifest, files)
    }

    fn frame(manifest: &Manifest, files: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        write_manifest(&mut out, manifest).unwrap();
        for f in files {
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn frames_round_trip() {
        let (manifest, files) = sample();
        let framed = frame(&manifest, &files);
        let mut input = framed.as_slice();
        let read = read_manifest(&mut input).unwrap();
        assert_eq!(read, manifest);
        for (i, (meta, bytes)) in read.attachments.iter().zip(&files).enumerate() {
            let mut out = Vec::new();
            copy_attachment(&mut input, &mut out, meta, i + 1).unwrap();
            assert_eq!(&out, bytes);
        }
        expect_end(&mut input).unwrap();
    }

    #[test]
    fn damage_is_detected() {
        let (manifest, files) = sample();
        let mut framed = frame(&manifest, &files);
        let last = framed.len() - 1;
        framed[last] ^= 1;
        let mut input = framed.as_slice();
        let read = read_manifest(&mut input).unwrap();
        let mut sink = io::sink();
        copy_attachment(&mut input, &mut sink, &read.attachments[0], 1).unwrap();
        copy_attachment(&mut input, &mut sink, &read.attachments[1], 2).unwrap();
        assert!(matches!(
            copy_attachment(&mut input, &mut sink, &read.attachments[2], 3),
            Err(ContentsError::AttachmentMismatch { index: 3 })
        ));

        let framed = frame(&manifest, &files);
        let mut short = &framed[..framed.len() - 10];
        let read = read_manifest(&mut short).unwrap();
        copy_attachment(&mut short, &mut sink, &read.attachments[0], 1).unwrap();
        copy_attachment(&mut short, &mut sink, &read.attachments[1], 2).unwrap();
        assert!(matches!(
            copy_attachment(&mut short, &mut sink, &read.attachments[2], 3),
            Err(ContentsError::Truncated)
        ));
        assert!(matches!(
            read_manifest(&mut &framed[..3]),
            Err(ContentsError::Truncated)
        ));
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [
            "",
            "..",
            "a/b",
            "a\\b",
            ".hidden",
            "record.json",
            "PACK.JSON",
            "a\nb",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name("One page profile (2025).pdf").is_ok());
        let (mut manifest, _) = sample();
        manifest.attachments[1].name = manifest.attachments[0].name.to_uppercase();
        assert!(matches!(
            write_manifest(&mut Vec::new(), &manifest),
            Err(ContentsError::BadName { index: 2, .. })
        ));
    }

    #[test]
    fn huge_manifest_length_is_refused_without_allocating() {
        let mut framed = Vec::new();
        prost::encoding::encode_varint(u64::MAX / 2, &mut framed);
        assert!(matches!(
            read_manifest(&mut framed.as_slice()),
            Err(ContentsError::ManifestTooLarge)
        ));
    }
}
