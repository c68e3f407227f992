//! Serde helpers that write register values as `"0x…"` hex strings (JSON numbers above 2^53
//! lose precision in many readers) and read either such a string or a plain number.

use serde::{Deserialize, Deserializer, Serializer};

/// A string or a number, as accepted on input.
#[derive(Deserialize)]
#[serde(untagged)]
enum HexOrNumber {
    Text(String),
    Number(u64),
}

fn parse<E: serde::de::Error>(v: HexOrNumber) -> Result<u64, E> {
    match v {
        HexOrNumber::Number(n) => Ok(n),
        HexOrNumber::Text(t) => hypdbg_model::parse_u64(&t).map_err(E::custom),
    }
}

/// `#[serde(with = "crate::hex")]` for a `u64`.
pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:#x}"))
}

/// `#[serde(with = "crate::hex")]` for a `u64`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    parse(HexOrNumber::deserialize(d)?)
}

/// `#[serde(with = "crate::hex::vec")]` for a `Vec<u64>`.
pub mod vec {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{HexOrNumber, parse};

    /// Serialise every element as a hex string.
    pub fn serialize<S: Serializer>(v: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for x in v {
            seq.serialize_element(&format!("{x:#x}"))?;
        }
        seq.end()
    }

    /// Read hex strings or numbers.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        Vec::<HexOrNumber>::deserialize(d)?
            .into_iter()
            .map(parse)
            .collect()
    }
}

/// `#[serde(with = "crate::hex::option")]` for an `Option<u64>`.
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{HexOrNumber, parse};

    /// `None` as null, `Some` as a hex string.
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) => s.collect_str(&format_args!("{x:#x}")),
            None => s.serialize_none(),
        }
    }

    /// Null, a hex string or a number.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<HexOrNumber>::deserialize(d)?
            .map(parse)
            .transpose()
    }
}
