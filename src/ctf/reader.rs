//! Reading a CTF: the header first, then one `<Pupil>` at a time.
//!
//! The input passes through a small [`BufRead`] adapter that counts lines and
//! records the bytes the XML parser consumes. While a `<Pupil>` is being
//! parsed the recording is kept, so the pupil's exact bytes come out beside
//! its parsed tree; between pupils it is cleared, so memory holds one pupil.
//! How the parsed elements become Baton's types is in `mapping`.

use std::io::{self, BufRead, Read};

use quick_xml::Reader;
use quick_xml::events::Event;

use super::mapping::{Node, map_pupil, parse_header};
use super::{CtfError, CtfHeader, CtfPupil};

/// A whole CTF in memory: what [`parse_all`] returns.
#[derive(Debug, Clone)]
pub struct Ctf {
    /// The file's header.
    pub header: CtfHeader,
    /// Every pupil, in file order.
    pub pupils: Vec<CtfPupil>,
}

/// Reads a whole CTF from memory. For large files prefer [`CtfReader`].
pub fn parse_all(input: &[u8]) -> Result<Ctf, CtfError> {
    let mut reader = CtfReader::new(input)?;
    let mut pupils = Vec::new();
    while let Some(pupil) = reader.next_pupil() {
        pupils.push(pupil?);
    }
    Ok(Ctf {
        header: reader.header,
        pupils,
    })
}

/// Streams a CTF: [`CtfReader::new`] reads and checks the header, then
/// [`CtfReader::next_pupil`] (or the iterator) yields one pupil at a time.
/// Before sending a pupil, call [`CtfPupil::check`] for the full check of
/// its values.
///
/// After an error the reader yields nothing more.
pub struct CtfReader<R: BufRead> {
    xml: Reader<Tracking<R>>,
    buf: Vec<u8>,
    header: CtfHeader,
    in_pupil_data: bool,
    position: usize,
    finished: bool,
}

impl<R: BufRead> CtfReader<R> {
    /// Reads up to the end of `<Header>` and validates it: the source must
    /// be a valid LAESTAB, the destination a LAESTAB, `XXXXXXX` or
    /// `MMMMMMM`, and the version a number such as `25.0`.
    pub fn new(input: R) -> Result<Self, CtfError> {
        let mut xml = Reader::from_reader(Tracking::new(input));
        let mut buf = Vec::new();
        let mut in_root = false;
        loop {
            buf.clear();
            let event = xml
                .read_event_into(&mut buf)
                .map_err(|e| xml_error(&xml, e))?;
            match event {
                Event::Start(e) | Event::Empty(e) if !in_root => {
                    let name = name_of(e.local_name());
                    if name != "CTfile" {
                        return Err(CtfError::NotCtf { found: name });
                    }
                    in_root = true;
                }
                Event::Start(e) => {
                    let name = name_of(e.local_name());
                    if name == "CTFpupilData" {
                        return Err(CtfError::MissingHeader);
                    }
                    let line = xml.get_ref().line();
                    let node = read_element(&mut xml, &mut buf, name, line)?;
                    if node.name == "Header" {
                        let header = parse_header(&node)?;
                        return Ok(Self {
                            xml,
                            buf,
                            header,
                            in_pupil_data: false,
                            position: 0,
                            finished: false,
                        });
                    }
                }
                Event::Empty(_) => {}
                Event::Eof => return Err(CtfError::MissingHeader),
                _ => {}
            }
        }
    }

    /// The file's header.
    pub fn header(&self) -> &CtfHeader {
        &self.header
    }

    /// The next pupil, or `None` at the end of the file.
    pub fn next_pupil(&mut self) -> Option<Result<CtfPupil, CtfError>> {
        if self.finished {
            return None;
        }
        let result = self.read_next();
        if !matches!(result, Some(Ok(_))) {
            self.finished = true;
        }
        result
    }

    fn read_next(&mut self) -> Option<Result<CtfPupil, CtfError>> {
        loop {
            // Outside a pupil nothing recorded is worth keeping.
            self.xml.get_mut().recorded.clear();
            self.buf.clear();
            let event = match self.xml.read_event_into(&mut self.buf) {
                Ok(event) => event,
                Err(e) => return Some(Err(xml_error(&self.xml, e))),
            };
            match event {
                Event::Start(e) => {
                    let name = name_of(e.local_name());
                    if !self.in_pupil_data && name == "CTFpupilData" {
                        self.in_pupil_data = true;
                        continue;
                    }
                    let line = self.xml.get_ref().line();
                    let is_pupil = self.in_pupil_data && name == "Pupil";
                    let node = match read_element(&mut self.xml, &mut self.buf, name, line) {
                        Ok(node) => node,
                        Err(e) => return Some(Err(e)),
                    };
                    if is_pupil {
                        return Some(self.pupil(node, line));
                    }
                }
                Event::Empty(e) if self.in_pupil_data && name_of(e.local_name()) == "Pupil" => {
                    let line = self.xml.get_ref().line();
                    let node = Node::new("Pupil".into(), line);
                    return Some(self.pupil(node, line));
                }
                Event::End(e) if name_of(e.local_name()) == "CTFpupilData" => {
                    self.in_pupil_data = false;
                }
                Event::Eof => return None,
                _ => {}
            }
        }
    }

    fn pupil(&mut self, node: Node, line: usize) -> Result<CtfPupil, CtfError> {
        self.position += 1;
        let pupil = self.position;
        let recorded = std::mem::take(&mut self.xml.get_mut().recorded);
        let raw_xml = raw_element(recorded).ok_or(CtfError::NotUtf8 { pupil, line })?;
        let mapped = map_pupil(&node, pupil);
        Ok(CtfPupil {
            position: pupil,
            line,
            raw_xml,
            record: mapped.record,
            problems: mapped.problems,
            places: mapped.places,
            left: mapped.left,
        })
    }
}

impl<R: BufRead> Iterator for CtfReader<R> {
    type Item = Result<CtfPupil, CtfError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_pupil()
    }
}

impl CtfPupil {
    /// Reads one `<Pupil>` element on its own (as stored in a pack), giving
    /// it `position`. Lines count from the start of `xml`.
    pub fn from_xml(xml: &str, position: usize) -> Result<Self, CtfError> {
        let not_a_pupil = CtfError::NotAPupil { pupil: position };
        let mut reader = Reader::from_reader(Tracking::new(xml.as_bytes()));
        let mut buf = Vec::new();
        let mut found: Option<Node> = None;
        loop {
            buf.clear();
            let event = reader
                .read_event_into(&mut buf)
                .map_err(|e| xml_error(&reader, e))?;
            match event {
                Event::Start(_) | Event::Empty(_) if found.is_some() => return Err(not_a_pupil),
                Event::Start(e) if name_of(e.local_name()) == "Pupil" => {
                    let line = reader.get_ref().line();
                    found = Some(read_element(&mut reader, &mut buf, "Pupil".into(), line)?);
                }
                Event::Empty(e) if name_of(e.local_name()) == "Pupil" => {
                    found = Some(Node::new("Pupil".into(), reader.get_ref().line()));
                }
                Event::Start(_) | Event::Empty(_) | Event::End(_) => return Err(not_a_pupil),
                Event::Text(t) if !t.trim().is_empty() => return Err(not_a_pupil),
                Event::Eof => break,
                _ => {}
            }
        }
        let node = found.ok_or(not_a_pupil)?;
        let mapped = map_pupil(&node, position);
        let start = xml.find('<').unwrap_or(0);
        let end = xml.rfind('>').map_or(xml.len(), |i| i + 1);
        Ok(Self {
            position,
            line: node.line,
            raw_xml: xml.get(start..end).unwrap_or(xml).to_string(),
            record: mapped.record,
            problems: mapped.problems,
            places: mapped.places,
            left: mapped.left,
        })
    }
}

/// The recorded bytes of an element, from its `<` on. The recording starts
/// just before the start tag's event, so at most some whitespace precedes it.
fn raw_element(mut recorded: Vec<u8>) -> Option<String> {
    let start = recorded.iter().position(|&b| b == b'<').unwrap_or(0);
    recorded.drain(..start);
    String::from_utf8(recorded).ok()
}

/// Counts lines and records what the XML parser consumes.
struct Tracking<R> {
    inner: R,
    newlines: usize,
    recorded: Vec<u8>,
}

impl<R> Tracking<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            newlines: 0,
            recorded: Vec::new(),
        }
    }

    /// The 1-based line the parser has reached.
    fn line(&self) -> usize {
        self.newlines + 1
    }
}

impl<R: BufRead> Read for Tracking<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Tracking<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if amount > 0 {
            // The bytes being consumed are still in the inner buffer, so this
            // does no I/O.
            if let Ok(available) = self.inner.fill_buf() {
                let taken = &available[..amount.min(available.len())];
                self.newlines += taken.iter().filter(|&&b| b == b'\n').count();
                self.recorded.extend_from_slice(taken);
            }
        }
        self.inner.consume(amount);
    }
}

/// An element's name without any namespace prefix.
fn name_of(name: quick_xml::name::LocalName<'_>) -> String {
    name.as_ref().to_string()
}

fn xml_error<R>(xml: &Reader<Tracking<R>>, error: quick_xml::Error) -> CtfError {
    CtfError::Xml {
        line: xml.get_ref().line(),
        message: error.to_string(),
    }
}

/// Reads the rest of an element whose start tag was just read.
fn read_element<R: BufRead>(
    xml: &mut Reader<Tracking<R>>,
    buf: &mut Vec<u8>,
    name: String,
    line: usize,
) -> Result<Node, CtfError> {
    let mut stack = vec![Node::new(name, line)];
    loop {
        buf.clear();
        let event = xml.read_event_into(buf).map_err(|e| xml_error(xml, e))?;
        let line = xml.get_ref().line();
        let Some(top) = stack.last_mut() else {
            return Err(CtfError::Xml {
                line,
                message: "unbalanced elements".into(),
            });
        };
        match event {
            Event::Start(e) => stack.push(Node::new(name_of(e.local_name()), line)),
            Event::Empty(e) => top.children.push(Node::new(name_of(e.local_name()), line)),
            Event::Text(t) => top.text.push_str(&t.xml10_content()),
            Event::CData(c) => top.text.push_str(&c.xml10_content()),
            Event::GeneralRef(r) => {
                if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => top.text.push(c),
                        _ => return Err(CtfError::UnknownEntity { line }),
                    }
                } else {
                    match quick_xml::escape::resolve_predefined_entity(&r) {
                        Some(s) => top.text.push_str(s),
                        None => return Err(CtfError::UnknownEntity { line }),
                    }
                }
            }
            Event::End(_) => {
                let done = stack.pop().unwrap_or_default();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Eof => {
                return Err(CtfError::Xml {
                    line,
                    message: "the file ends inside an element".into(),
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
