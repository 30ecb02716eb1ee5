//! Bech32 (BIP 173), the encoding of age recipients (`age1…`): enough to
//! check a recipient's checksum where the age crate is not compiled in (the
//! daemon registers keys but never encrypts), and to write one in tests.

const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const GENERATOR: [u32; 5] = [
    0x3b6a_57b2,
    0x2650_8e6d,
    0x1ea1_19fa,
    0x3d42_33dd,
    0x2a14_62b3,
];

fn polymod(values: impl Iterator<Item = u8>) -> u32 {
    let mut chk: u32 = 1;
    for v in values {
        let top = chk >> 25;
        chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GENERATOR.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

fn hrp_expand(hrp: &str) -> impl Iterator<Item = u8> + '_ {
    hrp.bytes()
        .map(|b| b >> 5)
        .chain(std::iter::once(0))
        .chain(hrp.bytes().map(|b| b & 31))
}

/// Regroups `data` from `from`-bit to `to`-bit groups (padding the last
/// group when `pad`); `None` when the bits left over are not zero padding.
fn convert_bits(data: &[u8], from: u32, to: u32, pad: bool) -> Option<Vec<u8>> {
    let (mut acc, mut bits) = (0u32, 0u32);
    let max = (1u32 << to) - 1;
    let mut out = Vec::new();
    for &v in data {
        acc = (acc << from) | u32::from(v);
        bits += from;
        while bits >= to {
            bits -= to;
            out.push(((acc >> bits) & max) as u8);
        }
    }
    if pad {
        if bits > 0 {
            out.push(((acc << (to - bits)) & max) as u8);
        }
    } else if bits >= from || ((acc << (to - bits)) & max) != 0 {
        return None;
    }
    Some(out)
}

/// `data` as Bech32 with human-readable part `hrp` (lower case).
pub fn encode(hrp: &str, data: &[u8]) -> String {
    let five = convert_bits(data, 8, 5, true).unwrap_or_default();
    let checksum_input = hrp_expand(hrp).chain(five.iter().copied()).chain([0u8; 6]);
    let pm = polymod(checksum_input) ^ 1;
    let mut out = format!("{hrp}1");
    for v in five
        .iter()
        .copied()
        .chain((0..6).map(|i| ((pm >> (5 * (5 - i))) & 31) as u8))
    {
        out.push(char::from(CHARSET[usize::from(v)]));
    }
    out
}

/// The human-readable part and data of a lower-case Bech32 string whose
/// checksum holds; `None` otherwise.
pub fn decode(text: &str) -> Option<(String, Vec<u8>)> {
    let (hrp, rest) = text.rsplit_once('1')?;
    if hrp.is_empty() || rest.len() < 6 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let values: Vec<u8> = rest
        .bytes()
        .map(|b| CHARSET.iter().position(|&c| c == b).map(|p| p as u8))
        .collect::<Option<_>>()?;
    if polymod(hrp_expand(hrp).chain(values.iter().copied())) != 1 {
        return None;
    }
    let data = convert_bits(&values[..values.len() - 6], 5, 8, false)?;
    Some((hrp.to_string(), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_catches_a_changed_character() {
        let text = encode("age", &[7u8; 32]);
        assert_eq!(text.len(), 62);
        assert_eq!(decode(&text), Some(("age".into(), vec![7u8; 32])));
        let mut broken = text.clone().into_bytes();
        broken[10] = if broken[10] == b'q' { b'p' } else { b'q' };
        assert_eq!(decode(&String::from_utf8(broken).unwrap()), None);
        // A recipient the age CLI made.
        let real = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        assert_eq!(
            decode(real).map(|(h, d)| (h, d.len())),
            Some(("age".into(), 32))
        );
    }
}
