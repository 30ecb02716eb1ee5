//! Unique Pupil Numbers: normalising, validating the mod-23 check letter, and
//! telling permanent from temporary UPNs.
//!
//! A UPN is 13 characters: a check letter, then the LA code (3 digits), the
//! allocating school's establishment number (4), the year of allocation (2)
//! and a serial (3). A *temporary* UPN ends in a letter instead of the last
//! digit. The check letter is the weighted sum of characters 2–13 (weights
//! 2–13) mod 23, mapped onto [`CHECK_LETTERS`]; a temporary UPN's final letter
//! counts as its index in that same table.
//!
//! Error messages describe the shape of the problem ("check letter should be
//! H, found Z") and never echo a whole UPN, which identifies a child.

use std::fmt;
use std::str::FromStr;

/// The 23 letters a check letter (or a temporary UPN's last character) may take.
/// I, O and S never appear.
pub const CHECK_LETTERS: &[u8; 23] = b"ABCDEFGHJKLMNPQRTUVWXYZ";

/// A valid Unique Pupil Number, normalised to upper case without spaces.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Upn(String);

/// Why a string is not a valid UPN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpnError {
    /// Not 13 characters after removing spaces.
    #[error("a UPN has 13 characters, found {0}")]
    Length(usize),
    /// Position 1 is not one of the 23 check letters.
    #[error("the first character of a UPN must be a check letter (A–Z without I, O, S)")]
    FirstNotCheckLetter,
    /// A character in positions 2–12 is not a digit.
    #[error("character {position} of a UPN must be a digit")]
    NotDigit {
        /// 1-based position of the offending character.
        position: usize,
    },
    /// The last character is neither a digit nor one of the 23 check letters.
    #[error(
        "the last character of a UPN must be a digit, or a letter (not I, O, S) for a temporary UPN"
    )]
    BadLast,
    /// The check letter does not match the rest of the UPN.
    #[error("check letter should be {expected}, found {found}")]
    CheckLetter {
        /// The check letter the digits call for.
        expected: char,
        /// The check letter written.
        found: char,
    },
}

impl Upn {
    /// Normalises (removes spaces, upper-cases) and validates `input`.
    pub fn parse(input: &str) -> Result<Self, UpnError> {
        let normal: String = input
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bytes = normal.as_bytes();
        if normal.chars().count() != 13 || bytes.len() != 13 {
            return Err(UpnError::Length(normal.chars().count()));
        }
        if letter_index(bytes[0]).is_none() {
            return Err(UpnError::FirstNotCheckLetter);
        }
        if let Some(i) = bytes[1..12].iter().position(|b| !b.is_ascii_digit()) {
            return Err(UpnError::NotDigit { position: i + 2 });
        }
        if !bytes[12].is_ascii_digit() && letter_index(bytes[12]).is_none() {
            return Err(UpnError::BadLast);
        }
        let expected = check_letter(&bytes[1..]);
        if bytes[0] != expected {
            return Err(UpnError::CheckLetter {
                expected: char::from(expected),
                found: char::from(bytes[0]),
            });
        }
        Ok(Self(normal))
    }

    /// The normalised UPN, 13 ASCII characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for a temporary UPN (last character a letter).
    pub fn is_temporary(&self) -> bool {
        self.0.as_bytes()[12].is_ascii_alphabetic()
    }

    /// The LA code of the allocating school (characters 2–4).
    pub fn la_code(&self) -> &str {
        &self.0[1..4]
    }
}

/// The check letter for the twelve characters after it (positions 2–13).
///
/// `rest` must be 12 bytes: 11 digits, then a digit or a check-table letter.
pub fn check_letter(rest: &[u8]) -> u8 {
    let sum: usize = rest
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let value = if b.is_ascii_digit() {
                usize::from(b - b'0')
            } else {
                letter_index(b).unwrap_or(0)
            };
            value * (i + 2)
        })
        .sum();
    CHECK_LETTERS[sum % 23]
}

fn letter_index(b: u8) -> Option<usize> {
    CHECK_LETTERS.iter().position(|&l| l == b)
}

impl FromStr for Upn {
    type Err = UpnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Upn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Redacted: a UPN identifies a child and must not reach a log line by accident.
impl fmt::Debug for Upn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Upn(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn published_examples() {
        assert!(Upn::parse("H801200001001").is_ok());
        assert_eq!(
            Upn::parse("Z801200001001"),
            Err(UpnError::CheckLetter {
                expected: 'H',
                found: 'Z'
            })
        );
        assert_eq!(
            Upn::parse("Z801200001001").map_err(|e| e.to_string()),
            Err("check letter should be H, found Z".to_string())
        );
        let temp = Upn::parse("G80120000101A").unwrap();
        assert!(temp.is_temporary());
        assert!(Upn::parse("B801200005001").is_ok());
        assert!(matches!(
            Upn::parse("A801200005001"),
            Err(UpnError::CheckLetter {
                expected: 'B',
                found: 'A'
            })
        ));
    }

    #[test]
    fn normalises_case_and_spaces() {
        let upn = Upn::parse("  h8012 0000 1001 ").unwrap();
        assert_eq!(upn.as_str(), "H801200001001");
        assert!(!upn.is_temporary());
        assert_eq!(upn.la_code(), "801");
        assert_eq!(
            Upn::parse("g80120000101a").unwrap().as_str(),
            "G80120000101A"
        );
    }

    #[test]
    fn shape_errors() {
        assert_eq!(Upn::parse("H80120000100"), Err(UpnError::Length(12)));
        assert_eq!(Upn::parse(""), Err(UpnError::Length(0)));
        assert_eq!(
            Upn::parse("I801200001001"),
            Err(UpnError::FirstNotCheckLetter)
        );
        assert_eq!(
            Upn::parse("H80120X001001"),
            Err(UpnError::NotDigit { position: 7 })
        );
        assert_eq!(Upn::parse("H80120000100O"), Err(UpnError::BadLast));
        assert_eq!(Upn::parse("H8012000010é1"), Err(UpnError::Length(13)));
    }

    #[test]
    fn debug_is_redacted() {
        let upn = Upn::parse("H801200001001").unwrap();
        assert!(!format!("{upn:?}").contains("801200001001"));
    }

    fn upn_body() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(0u8..10, 11),
            prop_oneof![
                (0u8..10).prop_map(|d| b'0' + d),
                (0usize..23).prop_map(|i| CHECK_LETTERS[i])
            ],
        )
            .prop_map(|(digits, last)| {
                let mut body: Vec<u8> = digits.into_iter().map(|d| b'0' + d).collect();
                body.push(last);
                body
            })
    }

    proptest! {
        #[test]
        fn generated_upns_round_trip(body in upn_body()) {
            let mut text = vec![check_letter(&body)];
            text.extend_from_slice(&body);
            let text = String::from_utf8(text).unwrap();
            let upn = Upn::parse(&text.to_lowercase()).unwrap();
            prop_assert_eq!(upn.as_str(), text.as_str());
            prop_assert_eq!(upn.to_string().parse::<Upn>().unwrap(), upn);
        }

        #[test]
        fn any_single_character_change_is_caught(
            body in upn_body(),
            position in 0usize..13,
            replacement in prop_oneof![(0u8..10).prop_map(|d| b'0' + d), (0usize..23).prop_map(|i| CHECK_LETTERS[i])],
        ) {
            let mut text = vec![check_letter(&body)];
            text.extend_from_slice(&body);
            prop_assume!(text[position] != replacement);
            // The scheme gives a temporary UPN's final letter the value of its
            // index, so swapping the last digit d for the letter with index d
            // is invisible to any check letter: only value changes count.
            let value = |b: u8| if b.is_ascii_digit() { usize::from(b - b'0') } else { letter_index(b).unwrap_or(99) };
            prop_assume!(position == 0 || value(text[position]) != value(replacement));
            text[position] = replacement;
            let changed = String::from_utf8(text).unwrap();
            prop_assert!(Upn::parse(&changed).is_err(), "accepted a changed UPN");
        }
    }
}
