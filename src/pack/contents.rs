//! The plaintext of a pack, framed so it streams: a length-delimited
//! protobuf `Manifest` (the record, the raw CTF `<Pupil>` element, the list
//! of attachments), then each attachment's bytes in order, each followed by
//! its SHA-256 from format version 2 on (see [`VERSIONS`]).
//! [`ContentsWriter`] frames, [`ContentsReader`] reads and checks every size
//! and SHA-256 as it goes; nothing here touches the file system.

use std::io::{self, Read, Write};

use prost::Message as _;
use sha2::{Digest, Sha256};

pub use super::header::VERSIONS;
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
    /// An attachment known by name and size only: its SHA-256 (zeros here)
    /// is filled in when it is sealed in format version 2, which hashes the
    /// bytes as it writes them.
    pub fn listed(name: &str, size: u64) -> Self {
        Self {
            name: name.to_string(),
            media_type: media_type_for(name).to_string(),
            size,
            sha256: [0; 32],
        }
    }

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

/// Most attachments one pack may list.
pub const MAX_ATTACHMENTS: usize = 1000;

/// Characters Windows forbids in a file name (beside control characters).
const WINDOWS_FORBIDDEN: &[char] = &['<', '>', ':', '"', '/', '\\', '|', '?', '*'];

/// Device names Windows reserves, with or without an extension.
const WINDOWS_DEVICES: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM0", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7",
    "COM8", "COM9", "LPT0", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Characters that change how a name is shown without being seen: bidi
/// controls (which can make `gpj.exe` read as `exe.jpg`) and zero-width
/// characters (which make two different names look alike).
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}' | '\u{00AD}'
    )
}

/// Checks an attachment name is a plain file name that is safe, and means
/// the same, on Linux, Windows and macOS: no path, no control, invisible
/// or Windows-forbidden character, no reserved device name, no trailing dot
/// or space, and Unicode in composed form (NFC) so that no two names differ
/// only in how an accent is encoded.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    use unicode_normalization::UnicodeNormalization as _;
    if name.is_empty() || name.trim().is_empty() {
        return Err("it is empty");
    }
    if name.len() > 255 {
        return Err("it is longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return Err("it is a directory reference");
    }
    if name.contains(['/', '\\', '\0']) || name.chars().any(char::is_control) {
        return Err("it contains a path separator or control character");
    }
    if name.contains(WINDOWS_FORBIDDEN) {
        return Err("it contains a character Windows forbids in file names (< > : \" | ? *)");
    }
    if name.chars().any(invisible) {
        return Err("it contains an invisible (bidi or zero-width) character");
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err("it ends with a dot or a space, which Windows drops");
    }
    if name.starts_with('.') {
        return Err("it is a hidden file name");
    }
    let stem = name.split('.').next().unwrap_or(name).trim_end();
    if WINDOWS_DEVICES.iter().any(|d| d.eq_ignore_ascii_case(stem)) {
        return Err("it is a device name Windows reserves (CON, NUL, COM1, …)");
    }
    if name.nfc().ne(name.chars()) {
        return Err("its Unicode is not in composed (NFC) form");
    }
    if RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err("record.json and pack.json are reserved in a pack folder");
    }
    Ok(())
}

/// Checks every attachment name, that no two are the same (ignoring case,
/// as Windows and macOS do), and that there are at most [`MAX_ATTACHMENTS`].
pub fn check_names(attachments: &[AttachmentMeta]) -> Result<(), ContentsError> {
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(ContentsError::BadName {
            index: MAX_ATTACHMENTS + 1,
            problem: "a pack holds at most 1000 attachments",
        });
    }
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

/// Frames a pack's plaintext into `out`: the manifest, then each attachment
/// in manifest order through [`ContentsWriter::attachment`].
pub struct ContentsWriter<W> {
    out: W,
    version: u32,
    attachments: Vec<AttachmentMeta>,
    next: usize,
}

impl<W: Write> ContentsWriter<W> {
    /// Writes the manifest frame in format `version`. In version 1 the
    /// attachments' SHA-256 must be filled in; in version 2 they are not
    /// read (each is computed as the attachment is written).
    pub fn new(mut out: W, manifest: &Manifest, version: u32) -> Result<Self, ContentsError> {
        check_version(version)?;
        check_names(&manifest.attachments)?;
        let mut wire = v1::Manifest::from(manifest.clone());
        if version >= 2 {
            for a in &mut wire.attachments {
                a.sha256.clear();
            }
        }
        out.write_all(&wire.encode_length_delimited_to_vec())?;
        Ok(Self {
            out,
            version,
            attachments: manifest.attachments.clone(),
            next: 0,
        })
    }

    /// Writes the next attachment: exactly its listed size from `source`,
    /// which must then end ([`ContentsError::AttachmentChanged`] if it gives
    /// more or fewer bytes, or in version 1 other bytes than the manifest's
    /// SHA-256 describes). Returns the bytes' SHA-256.
    pub fn attachment(&mut self, source: &mut impl Read) -> Result<[u8; 32], ContentsError> {
        let index = self.next + 1;
        let meta = self.attachments.get_mut(self.next).ok_or_else(|| {
            ContentsError::Malformed("more attachments than the manifest lists".into())
        })?;
        let changed = || ContentsError::AttachmentChanged { index };
        let digest = copy_exact(source, &mut self.out, meta.size).map_err(|e| match e {
            ContentsError::Truncated => changed(),
            other => other,
        })?;
        expect_end(source).map_err(|_| changed())?;
        if self.version == 1 && digest != meta.sha256 {
            return Err(changed());
        }
        if self.version >= 2 {
            self.out.write_all(&digest)?;
        }
        meta.sha256 = digest;
        self.next += 1;
        Ok(digest)
    }

    /// Ends the plaintext once every attachment is written; returns the
    /// writer and the attachments with the SHA-256 of the bytes written.
    pub fn finish(self) -> Result<(W, Vec<AttachmentMeta>), ContentsError> {
        if self.next != self.attachments.len() {
            return Err(ContentsError::Malformed(
                "fewer attachments than the manifest lists".into(),
            ));
        }
        Ok((self.out, self.attachments))
    }
}

/// Reads a pack's plaintext from `input`: the manifest, then each
/// attachment through [`ContentsReader::copy_next`], checking every size
/// and SHA-256 as it goes.
pub struct ContentsReader<R> {
    input: R,
    version: u32,
    manifest: Manifest,
    next: usize,
}

impl<R: Read> ContentsReader<R> {
    /// Reads the manifest frame of a format `version` pack.
    pub fn new(mut input: R, version: u32) -> Result<Self, ContentsError> {
        check_version(version)?;
        let manifest = read_manifest(&mut input, version)?;
        Ok(Self {
            input,
            version,
            manifest,
            next: 0,
        })
    }

    /// The manifest. In version 2 an attachment's SHA-256 is all zeros until
    /// [`ContentsReader::copy_next`] has read it.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The attachment [`ContentsReader::copy_next`] reads next (0-based), if
    /// any is left.
    pub fn next_index(&self) -> Option<usize> {
        (self.next < self.manifest.attachments.len()).then_some(self.next)
    }

    /// Copies the next attachment into `out` and checks its size and
    /// SHA-256. On an error the bytes written so far are unverified: the
    /// caller must discard `out`.
    pub fn copy_next(&mut self, out: &mut dyn Write) -> Result<(), ContentsError> {
        let index = self.next + 1;
        let meta = self
            .manifest
            .attachments
            .get_mut(self.next)
            .ok_or_else(|| ContentsError::Malformed("no attachment is left to read".into()))?;
        let digest = copy_exact(&mut self.input, out, meta.size)?;
        let expected = if self.version >= 2 {
            let mut listed = [0u8; 32];
            self.input.read_exact(&mut listed).map_err(truncated)?;
            listed
        } else {
            meta.sha256
        };
        if digest != expected {
            return Err(ContentsError::AttachmentMismatch { index });
        }
        meta.sha256 = digest;
        self.next += 1;
        Ok(())
    }

    /// Checks every attachment was read and nothing follows the last one;
    /// returns the manifest with every attachment's SHA-256.
    pub fn finish(mut self) -> Result<Manifest, ContentsError> {
        if self.next_index().is_some() {
            return Err(ContentsError::Truncated);
        }
        expect_end(&mut self.input)?;
        Ok(self.manifest)
    }
}

fn check_version(version: u32) -> Result<(), ContentsError> {
    if VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(ContentsError::Malformed(format!(
            "pack format version {version} is not supported"
        )))
    }
}

fn truncated(e: io::Error) -> ContentsError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ContentsError::Truncated
    } else {
        ContentsError::Io(e)
    }
}

/// Reads the manifest frame.
fn read_manifest(input: &mut impl Read, version: u32) -> Result<Manifest, ContentsError> {
    let len = read_varint(input)?;
    if len > MAX_MANIFEST_LEN {
        return Err(ContentsError::ManifestTooLarge);
    }
    let mut bytes = Vec::new();
    input.take(len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(ContentsError::Truncated);
    }
    let mut wire = v1::Manifest::decode(bytes.as_slice())
        .map_err(|e| ContentsError::Malformed(e.to_string()))?;
    if version >= 2 {
        for a in &mut wire.attachments {
            if !a.sha256.is_empty() {
                return Err(ContentsError::Malformed(
                    "a version 2 manifest lists no attachment hashes".into(),
                ));
            }
            a.sha256 = vec![0; 32];
        }
    }
    let manifest = Manifest::try_from(wire).map_err(|e| ContentsError::Malformed(e.to_string()))?;
    check_names(&manifest.attachments)?;
    Ok(manifest)
}

/// Copies exactly `size` bytes from `input` to `out` and returns their
/// SHA-256 ([`ContentsError::Truncated`] if `input` ends first).
fn copy_exact(
    input: &mut impl Read,
    out: &mut dyn Write,
    size: u64,
) -> Result<[u8; 32], ContentsError> {
    let mut hasher = Sha256Stream::new();
    let mut remaining = size;
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
    hasher
        .finalize()
        .ok_or_else(|| io::Error::other("the hashing thread failed").into())
}

/// Checks `input` has nothing left.
fn expect_end(input: &mut impl Read) -> Result<(), ContentsError> {
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

    fn frame(manifest: &Manifest, files: &[Vec<u8>], version: u32) -> Vec<u8> {
        let mut w = ContentsWriter::new(Vec::new(), manifest, version).unwrap();
        for f in files {
            w.attachment(&mut f.as_slice()).unwrap();
        }
        let (out, hashed) = w.finish().unwrap();
        assert!(hashed == manifest.attachments);
        out
    }

    /// Reads every attachment; the error of the first that fails, if any.
    fn read_all(framed: &[u8], version: u32) -> Result<(Manifest, Vec<Vec<u8>>), ContentsError> {
        let mut r = ContentsReader::new(framed, version)?;
        let mut files = Vec::new();
        while r.next_index().is_some() {
            let mut out = Vec::new();
            r.copy_next(&mut out)?;
            files.push(out);
        }
        Ok((r.finish()?, files))
    }

    #[test]
    fn frames_round_trip_in_every_version() {
        let (manifest, files) = sample();
        for version in VERSIONS {
            let framed = frame(&manifest, &files, version);
            let (read, got) = read_all(&framed, version).unwrap();
            assert!(read == manifest, "version {version}");
            assert_eq!(got, files, "version {version}");
        }
        // Version 2 carries each hash after its bytes, none in the manifest.
        let v1 = frame(&manifest, &files, 1);
        let v2 = frame(&manifest, &files, 2);
        assert!(v2.ends_with(&manifest.attachments[2].sha256));
        assert!(v1.ends_with(&files[2]));
        let r = ContentsReader::new(v2.as_slice(), 2).unwrap();
        assert!(r.manifest().attachments.iter().all(|a| a.sha256 == [0; 32]));
        assert!(matches!(read_all(&v2, 1), Err(ContentsError::Malformed(_))));
        assert!(matches!(read_all(&v1, 2), Err(ContentsError::Malformed(_))));
    }

    #[test]
    fn a_version_2_writer_hashes_what_it_writes() {
        let (manifest, files) = sample();
        let listed = Manifest {
            attachments: manifest
                .attachments
                .iter()
                .map(|a| AttachmentMeta::listed(&a.name, a.size))
                .collect(),
            ..manifest.clone()
        };
        let mut w = ContentsWriter::new(Vec::new(), &listed, 2).unwrap();
        for f in &files {
            w.attachment(&mut f.as_slice()).unwrap();
        }
        let (framed, hashed) = w.finish().unwrap();
        assert!(hashed == manifest.attachments);
        assert!(read_all(&framed, 2).unwrap().0 == manifest);
        // Version 1 needs the hashes first: listed ones are refused.
        let mut w = ContentsWriter::new(Vec::new(), &listed, 1).unwrap();
        assert!(matches!(
            w.attachment(&mut files[0].as_slice()),
            Err(ContentsError::AttachmentChanged { index: 1 })
        ));
    }

    #[test]
    fn a_source_that_changed_size_is_refused() {
        let (manifest, files) = sample();
        for version in VERSIONS {
            let mut w = ContentsWriter::new(Vec::new(), &manifest, version).unwrap();
            assert!(matches!(
                w.attachment(&mut &b"first and more"[..]),
                Err(ContentsError::AttachmentChanged { index: 1 })
            ));
            let mut w = ContentsWriter::new(Vec::new(), &manifest, version).unwrap();
            assert!(matches!(
                w.attachment(&mut &b"firs"[..]),
                Err(ContentsError::AttachmentChanged { index: 1 })
            ));
            let mut w = ContentsWriter::new(Vec::new(), &manifest, version).unwrap();
            w.attachment(&mut files[0].as_slice()).unwrap();
            assert!(matches!(w.finish(), Err(ContentsError::Malformed(_))));
        }
    }

    #[test]
    fn damage_is_detected() {
        let (manifest, files) = sample();
        for version in VERSIONS {
            let mut framed = frame(&manifest, &files, version);
            // The last attachment's last byte (version 1), or its hash's
            // last byte (version 2).
            let last = framed.len() - 1;
            framed[last] ^= 1;
            assert!(
                matches!(
                    read_all(&framed, version),
                    Err(ContentsError::AttachmentMismatch { index: 3 })
                ),
                "version {version}"
            );

            let framed = frame(&manifest, &files, version);
            assert!(matches!(
                read_all(&framed[..framed.len() - 10], version),
                Err(ContentsError::Truncated)
            ));
            let mut longer = framed.clone();
            longer.push(0);
            assert!(matches!(
                read_all(&longer, version),
                Err(ContentsError::TrailingData)
            ));
            assert!(matches!(
                ContentsReader::new(&framed[..3], version),
                Err(ContentsError::Truncated)
            ));
        }
        assert!(matches!(
            ContentsReader::new(&[][..], *VERSIONS.end() + 1),
            Err(ContentsError::Malformed(_))
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
            // Unsafe or misleading on Windows or macOS.
            "CON",
            "con.txt",
            "Lpt1.pdf",
            "nul .txt",
            "x.pdf.",
            "x.pdf ",
            "a<b",
            "a>b",
            "a:b",
            "a\"b",
            "a|b",
            "a?b",
            "a*b",
            "e\u{301}cole.pdf",
            "report\u{202E}fdp.exe",
            "re\u{200B}port.pdf",
            "\u{FEFF}report.pdf",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name("One page profile (2025).pdf").is_ok());
        assert!(check_name("\u{e9}cole – EHCP.pdf").is_ok());
        assert!(check_name("console.txt").is_ok());
        let many: Vec<AttachmentMeta> = (0..=MAX_ATTACHMENTS)
            .map(|i| AttachmentMeta::listed(&format!("f{i}.txt"), 1))
            .collect();
        assert!(check_names(&many).is_err());
        assert!(check_names(&many[..MAX_ATTACHMENTS]).is_ok());
        let (mut manifest, _) = sample();
        manifest.attachments[1].name = manifest.attachments[0].name.to_uppercase();
        assert!(matches!(
            ContentsWriter::new(Vec::new(), &manifest, 2),
            Err(ContentsError::BadName { index: 2, .. })
        ));
    }

    #[test]
    fn huge_manifest_length_is_refused_without_allocating() {
        let mut framed = Vec::new();
        prost::encoding::encode_varint(u64::MAX / 2, &mut framed);
        assert!(matches!(
            ContentsReader::new(framed.as_slice(), 2),
            Err(ContentsError::ManifestTooLarge)
        ));
    }
}
