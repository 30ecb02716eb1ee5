//! LAESTAB (DfE number) of a school, and the two special destinations of the
//! school-to-school convention that are not schools at all.
//!
//! A LAESTAB is 7 digits: the 3-digit LA code and the 4-digit establishment
//! number. In a CTF's `DestSchool`, `XXXXXXX` means the destination is
//! unknown and `MMMMMMM` means an independent school or a move abroad. They
//! are not schools ([`Laestab::parse`] refuses them), but where a trust has
//! enrolled an escrow holder a pack may be addressed to either: it is held
//! in escrow until the pupil's new school is known. [`Laestab::parse_address`]
//! (and `str::parse`) accepts them as [`Laestab::ESCROW`] and
//! [`Laestab::ESCROW_ABROAD`].

use std::fmt;
use std::str::FromStr;

/// A school's DfE number: 3-digit LA code + 4-digit establishment number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Laestab([u8; 7]);

/// Where a CTF says a pupil is going: a school, or one of the special codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// An enrolled-or-enrollable school.
    School(Laestab),
    /// `XXXXXXX`: destination unknown (Lost Pupil Database).
    Unknown,
    /// `MMMMMMM`: an independent school, or the pupil moved abroad.
    AbroadOrIndependent,
}

/// Why a string is not a LAESTAB.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LaestabError {
    /// Not 7 characters.
    #[error("a LAESTAB has 7 digits (LA code + establishment number), found {0} characters")]
    Length(usize),
    /// Contains something other than digits.
    #[error("a LAESTAB has only digits, found {0:?}")]
    NotDigits(String),
    /// One of the special destinations where a school is required.
    #[error("{0} is not a school: {1}")]
    Special(&'static str, &'static str),
}

impl Laestab {
    /// `XXXXXXX`, destination unknown: the trust's escrow holder, where one
    /// is enrolled.
    pub const ESCROW: Self = Self(*b"XXXXXXX");
    /// `MMMMMMM`, an independent school or abroad: held by the same escrow.
    pub const ESCROW_ABROAD: Self = Self(*b"MMMMMMM");

    /// Parses an address a pack may carry: a LAESTAB, or one of the two
    /// special destinations as the trust's escrow ([`Self::ESCROW`],
    /// [`Self::ESCROW_ABROAD`]).
    pub fn parse_address(input: &str) -> Result<Self, LaestabError> {
        Ok(Self::from_destination(Destination::parse(input)?))
    }

    /// A destination as an address: a school, or the escrow for the two
    /// special codes.
    pub fn from_destination(destination: Destination) -> Self {
        match destination {
            Destination::School(l) => l,
            Destination::Unknown => Self::ESCROW,
            Destination::AbroadOrIndependent => Self::ESCROW_ABROAD,
        }
    }

    /// Whether this is one of the escrow addresses, not a school.
    pub fn is_escrow(&self) -> bool {
        *self == Self::ESCROW || *self == Self::ESCROW_ABROAD
    }

    /// Parses a LAESTAB, ignoring surrounding spaces and one `/` or `-`
    /// between LA code and establishment number (`861/2001`).
    pub fn parse(input: &str) -> Result<Self, LaestabError> {
        match Destination::parse(input)? {
            Destination::School(l) => Ok(l),
            Destination::Unknown => Err(LaestabError::Special(
                "XXXXXXX",
                "it means the destination is unknown",
            )),
            Destination::AbroadOrIndependent => Err(LaestabError::Special(
                "MMMMMMM",
                "it means an independent school or a move abroad",
            )),
        }
    }

    /// Builds a LAESTAB from a CTF's separate `LEA` and `Estab` elements.
    pub fn from_parts(lea: &str, estab: &str) -> Result<Self, LaestabError> {
        Self::parse(&format!("{}{}", lea.trim(), estab.trim()))
    }

    /// The 7 digits (or the escrow's 7 letters).
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, or one of the two escrow codes, are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("0000000")
    }

    /// The 3-digit LA code.
    pub fn la_code(&self) -> &str {
        &self.as_str()[..3]
    }

    /// The 4-digit establishment number.
    pub fn estab(&self) -> &str {
        &self.as_str()[3..]
    }

    /// The 7 ASCII digits, as signed in pack headers.
    pub fn to_bytes(self) -> [u8; 7] {
        self.0
    }
}

impl Destination {
    /// Parses a destination: a LAESTAB, `XXXXXXX` or `MMMMMMM` (any case).
    pub fn parse(input: &str) -> Result<Self, LaestabError> {
        let compact: String = input
            .trim()
            .chars()
            .filter(|c| *c != '/' && *c != '-')
            .collect();
        match compact.to_ascii_uppercase().as_str() {
            "XXXXXXX" => return Ok(Self::Unknown),
            "MMMMMMM" => return Ok(Self::AbroadOrIndependent),
            _ => {}
        }
        let count = compact.chars().count();
        if count != 7 {
            return Err(LaestabError::Length(count));
        }
        if !compact.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LaestabError::NotDigits(compact));
        }
        let mut digits = [0u8; 7];
        digits.copy_from_slice(compact.as_bytes());
        Ok(Self::School(Laestab(digits)))
    }

    /// The code as written in a CTF header.
    pub fn code(&self) -> String {
        match self {
            Self::School(l) => l.to_string(),
            Self::Unknown => "XXXXXXX".to_string(),
            Self::AbroadOrIndependent => "MMMMMMM".to_string(),
        }
    }
}

/// Parses an address ([`Laestab::parse_address`]): a school, or an escrow
/// code. Use [`Laestab::parse`] where only a school will do.
impl FromStr for Laestab {
    type Err = LaestabError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_address(s)
    }
}

impl fmt::Display for Laestab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Laestab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Laestab({})", self.as_str())
    }
}

impl serde::Serialize for Laestab {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Laestab {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse_address(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schools() {
        let l = Laestab::parse(" 8612001 ").unwrap();
        assert_eq!(l.as_str(), "8612001");
        assert_eq!((l.la_code(), l.estab()), ("861", "2001"));
        assert_eq!(Laestab::parse("861/2001").unwrap(), l);
        assert_eq!(Laestab::from_parts("861", "2001").unwrap(), l);
        assert_eq!(l.to_bytes(), *b"8612001");
    }

    #[test]
    fn special_destinations_are_not_schools() {
        assert_eq!(Destination::parse("XXXXXXX"), Ok(Destination::Unknown));
        assert_eq!(
            Destination::parse("mmmmmmm"),
            Ok(Destination::AbroadOrIndependent)
        );
        let err = Laestab::parse("XXXXXXX").unwrap_err().to_string();
        assert!(err.contains("unknown"), "{err}");
        let err = Laestab::parse("MMMMMMM").unwrap_err().to_string();
        assert!(err.contains("abroad"), "{err}");
        assert_eq!(Destination::AbroadOrIndependent.code(), "MMMMMMM");
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(Laestab::parse("861200"), Err(LaestabError::Length(6)));
        assert_eq!(Laestab::parse("86120011"), Err(LaestabError::Length(8)));
        assert!(matches!(
            Laestab::parse("86A2001"),
            Err(LaestabError::NotDigits(_))
        ));
        assert_eq!(Laestab::parse(""), Err(LaestabError::Length(0)));
    }

    #[test]
    fn serde_round_trip() {
        let l = Laestab::parse("8612001").unwrap();
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(json, "\"8612001\"");
        assert_eq!(serde_json::from_str::<Laestab>(&json).unwrap(), l);
        // The escrow addresses round-trip too; `parse` still refuses them.
        let escrow: Laestab = serde_json::from_str("\"XXXXXXX\"").unwrap();
        assert!(escrow == Laestab::ESCROW && escrow.is_escrow());
        assert_eq!("mmmmmmm".parse::<Laestab>(), Ok(Laestab::ESCROW_ABROAD));
        assert!(Laestab::parse("XXXXXXX").is_err());
        assert!(!l.is_escrow());
        assert!(serde_json::from_str::<Laestab>("\"ABCDEFG\"").is_err());
    }
}
