//! Wire ↔ domain conversions.
//!
//! Receiving is `TryFrom<v1::X> for Domain`: it validates at the edge, so domain types keep
//! no `Option` for required fields, and a failure is a [`ConversionError`] naming the field
//! by its path in the message (`id.update_id.guid`, `localized[2].language`). A converter
//! reports paths relative to the message it converts; a caller converting a nested message
//! prefixes its own field with [`ConversionError::within`], so the path grows only on the
//! error path. Sending is `From<Domain> for v1::X` and never fails.
//!
//! - [`metadata`]: update ids, revision ids, references, the update enums, the catalog digest,
//!   the structured revision, summaries, and [`RevisionDocument`], the canonical node-to-node
//!   payload.
//! - This module: the error, the field helpers ([`required`], [`repeated`], [`required_enum`],
//!   [`optional_enum`], [`fixed_bytes`]) and timestamps, public so that other crates write
//!   conversions for their own domain types the same way.
//!
//! `google.protobuf.Timestamp` and the domain `Timestamp` are both foreign to this crate, so
//! their conversions are functions ([`timestamp_to_wire`], [`timestamp_from_wire`]) rather
//! than trait impls.

pub mod metadata;

use std::fmt;

use sitesync_metadata::Timestamp;

pub use metadata::{
    HeldReference, RevisionDocument, checked_document, compress_document, decompress_document,
    sent_document_len,
};

/// Text from a peer that is quoted in an error is cut to this many characters, so a hostile
/// peer cannot make our errors and logs as large as its messages.
const QUOTED_CHARS: usize = 64;

/// A wire message that does not make a valid domain value. `field` is the path of the
/// offending field within the converted message; empty when the converted value is the
/// field itself (an enum converted on its own).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConversionError {
    /// A required field is absent (a message field unset, an enum UNSPECIFIED, a required
    /// string or byte string empty).
    #[error("{} is required but missing", Shown(.field))]
    Missing { field: String },
    /// A GUID field does not parse.
    #[error(
        "{} is not an update id: `{value}` (expected a GUID such as 56309036-4c77-4dd9-951a-99ee9c246a94)",
        Shown(.field)
    )]
    InvalidGuid { field: String, value: String },
    /// A fixed-length byte field (digest, hash) has another length.
    #[error("{} must be exactly {expected} bytes, got {actual}", Shown(.field))]
    WrongLength {
        field: String,
        expected: usize,
        actual: usize,
    },
    /// A byte field is over its limit.
    #[error("{} is {actual} bytes, over the limit of {limit}", Shown(.field))]
    TooLarge {
        field: String,
        actual: usize,
        limit: usize,
    },
    /// An enum number this build does not know (the peer may run a newer contract).
    #[error(
        "{} is {value}, which is not a known {type_name} (is the peer running a newer sitesync?)",
        Shown(.field)
    )]
    UnknownEnumValue {
        field: String,
        type_name: &'static str,
        value: i32,
    },
    /// A value outside what the domain can represent.
    #[error("{} is out of range: {reason}", Shown(.field))]
    OutOfRange { field: String, reason: &'static str },
    /// A document's parsed identity differs from the identity it was sent under.
    #[error("{} declares {declared} but the document is {actual}", Shown(.field))]
    IdentityMismatch {
        field: String,
        declared: sitesync_metadata::RevisionId,
        actual: sitesync_metadata::RevisionId,
    },
    /// Encoded bytes (a compressed document) that do not decode.
    #[error("{} does not decode: {reason}", Shown(.field))]
    Undecodable { field: String, reason: String },
}

impl ConversionError {
    /// The path of the offending field.
    pub fn field(&self) -> &str {
        match self {
            Self::Missing { field }
            | Self::InvalidGuid { field, .. }
            | Self::WrongLength { field, .. }
            | Self::TooLarge { field, .. }
            | Self::UnknownEnumValue { field, .. }
            | Self::OutOfRange { field, .. }
            | Self::IdentityMismatch { field, .. }
            | Self::Undecodable { field, .. } => field,
        }
    }

    /// The same error seen from the enclosing message: `parent` is the field (with an index,
    /// `changes[3]`) that held the converted message.
    #[must_use]
    pub fn within(mut self, parent: &str) -> Self {
        let field = match &mut self {
            Self::Missing { field }
            | Self::InvalidGuid { field, .. }
            | Self::WrongLength { field, .. }
            | Self::TooLarge { field, .. }
            | Self::UnknownEnumValue { field, .. }
            | Self::OutOfRange { field, .. }
            | Self::IdentityMismatch { field, .. }
            | Self::Undecodable { field, .. } => field,
        };
        *field = if field.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{field}")
        };
        self
    }

    /// A required field is absent.
    pub fn missing(field: &str) -> Self {
        Self::Missing {
            field: field.to_owned(),
        }
    }
}

/// Shows a field path in an error message.
struct Shown<'a>(&'a String);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("the value")
        } else {
            write!(f, "field `{}`", self.0)
        }
    }
}

/// A conversion error reaching a service becomes `INVALID_ARGUMENT`: the peer sent a message
/// that does not follow the contract, and resending it will not help. The message names the
/// field, so the operator of the sending side can find the cause.
///
/// Only receiving *services* use this. A client that cannot convert a server's response has
/// met a misbehaving upstream, not a bad argument of its own; it reports that in its own
/// error type.
impl From<ConversionError> for tonic::Status {
    fn from(error: ConversionError) -> Self {
        tonic::Status::invalid_argument(format!("invalid message: {error}"))
    }
}

/// Cuts text quoted from a peer to [`QUOTED_CHARS`] characters.
pub(crate) fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A required message field: absent is [`ConversionError::Missing`], present is converted
/// and its errors are prefixed with `field`.
pub fn required<W, D>(wire: Option<W>, field: &str) -> Result<D, ConversionError>
where
    D: TryFrom<W, Error = ConversionError>,
{
    let wire = wire.ok_or_else(|| ConversionError::missing(field))?;
    D::try_from(wire).map_err(|e| e.within(field))
}

/// An optional message field: absent is `None`, present is converted.
pub fn optional<W, D>(wire: Option<W>, field: &str) -> Result<Option<D>, ConversionError>
where
    D: TryFrom<W, Error = ConversionError>,
{
    wire.map(|w| D::try_from(w).map_err(|e| e.within(field)))
        .transpose()
}

/// A repeated message field: every element converted, an error naming the element's index
/// (`field[3]`).
pub fn repeated<W, D>(wire: Vec<W>, field: &str) -> Result<Vec<D>, ConversionError>
where
    D: TryFrom<W, Error = ConversionError>,
{
    wire.into_iter()
        .enumerate()
        .map(|(index, w)| D::try_from(w).map_err(|e| e.within(&format!("{field}[{index}]"))))
        .collect()
}

/// A domain enum with a wire enum of the contract. The wire enum's zero value is
/// UNSPECIFIED, which is "absent".
pub trait WireEnum: Sized + TryFrom<Self::Wire, Error = ConversionError> {
    /// The generated wire enum.
    type Wire: TryFrom<i32> + From<Self> + Into<i32>;
    /// The enum's name in the contract, for errors.
    const TYPE_NAME: &'static str;
}

/// The raw `i32` of a wire enum field that is required: UNSPECIFIED is
/// [`ConversionError::Missing`], an unknown number [`ConversionError::UnknownEnumValue`].
pub fn required_enum<D: WireEnum>(raw: i32, field: &str) -> Result<D, ConversionError> {
    optional_enum(raw, field)?.ok_or_else(|| ConversionError::missing(field))
}

/// The raw `i32` of a wire enum field whose UNSPECIFIED value means the domain's `None`.
pub fn optional_enum<D: WireEnum>(raw: i32, field: &str) -> Result<Option<D>, ConversionError> {
    if raw == 0 {
        return Ok(None);
    }
    let wire = D::Wire::try_from(raw).map_err(|_| ConversionError::UnknownEnumValue {
        field: field.to_owned(),
        type_name: D::TYPE_NAME,
        value: raw,
    })?;
    D::try_from(wire).map(Some).map_err(|e| e.within(field))
}

/// The raw `i32` to put in a wire enum field.
pub fn enum_to_wire<D: WireEnum>(value: D) -> i32 {
    D::Wire::from(value).into()
}

/// The raw `i32` to put in a wire enum field whose UNSPECIFIED value means `None`.
pub fn optional_enum_to_wire<D: WireEnum>(value: Option<D>) -> i32 {
    value.map_or(0, enum_to_wire)
}

/// A byte field of exactly `N` bytes (digests, hashes).
pub fn fixed_bytes<const N: usize>(bytes: &[u8], field: &str) -> Result<[u8; N], ConversionError> {
    bytes.try_into().map_err(|_| ConversionError::WrongLength {
        field: field.to_owned(),
        expected: N,
        actual: bytes.len(),
    })
}

/// A domain timestamp on the wire. Exact: the domain keeps milliseconds.
pub fn timestamp_to_wire(time: Timestamp) -> prost_types::Timestamp {
    let millis = time.unix_millis();
    let sub_second_millis = millis.rem_euclid(1000) as i32;
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: sub_second_millis * 1_000_000,
    }
}

/// A wire timestamp in the domain. Sub-millisecond precision is dropped (rounded towards the
/// past); `nanos` outside `0..1_000_000_000` or seconds beyond what milliseconds in an `i64`
/// hold are refused.
pub fn timestamp_from_wire(wire: prost_types::Timestamp) -> Result<Timestamp, ConversionError> {
    if !(0..1_000_000_000).contains(&wire.nanos) {
        return Err(ConversionError::OutOfRange {
            field: "nanos".to_owned(),
            reason: "nanos must be within 0..=999999999",
        });
    }
    wire.seconds
        .checked_mul(1000)
        .and_then(|millis| millis.checked_add(i64::from(wire.nanos / 1_000_000)))
        .map(Timestamp::from_unix_millis)
        .ok_or_else(|| ConversionError::OutOfRange {
            field: "seconds".to_owned(),
            reason: "the time is too far from 1970 to hold in milliseconds",
        })
}

/// A required timestamp field.
pub fn required_timestamp(
    wire: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<Timestamp, ConversionError> {
    let wire = wire.ok_or_else(|| ConversionError::missing(field))?;
    timestamp_from_wire(wire).map_err(|e| e.within(field))
}

/// An optional timestamp field.
pub fn optional_timestamp(
    wire: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<Option<Timestamp>, ConversionError> {
    wire.map(|w| timestamp_from_wire(w).map_err(|e| e.within(field)))
        .transpose()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn within_builds_the_path_outwards() {
        let e = ConversionError::missing("guid")
            .within("update_id")
            .within("id")
            .within("changes[3]");
        assert_eq!(e.field(), "changes[3].id.update_id.guid");
        let e = ConversionError::missing("").within("update_type");
        assert_eq!(e.field(), "update_type");
    }

    #[test]
    fn status_is_invalid_argument_naming_the_field() {
        let status = tonic::Status::from(ConversionError::missing("id").within("revision"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid message: field `revision.id` is required but missing"
        );
    }

    #[test]
    fn quoted_text_is_bounded() {
        let long = "é".repeat(10_000);
        let q = quoted(&long);
        assert_eq!(q.chars().count(), QUOTED_CHARS + 1);
        assert_eq!(quoted("short"), "short");
    }

    #[test]
    fn fixed_bytes_checks_the_length() {
        assert_eq!(fixed_bytes::<3>(&[1, 2, 3], "x"), Ok([1, 2, 3]));
        assert_eq!(
            fixed_bytes::<3>(&[1, 2], "x"),
            Err(ConversionError::WrongLength {
                field: "x".into(),
                expected: 3,
                actual: 2
            })
        );
    }

    #[test]
    fn timestamp_edges() {
        let wire = timestamp_to_wire(Timestamp::from_unix_millis(-1));
        assert_eq!((wire.seconds, wire.nanos), (-1, 999_000_000));

        // Sub-millisecond precision rounds towards the past.
        let wire = prost_types::Timestamp {
            seconds: 10,
            nanos: 1_999_999,
        };
        assert_eq!(timestamp_from_wire(wire).unwrap().unix_millis(), 10_001);

        let bad_nanos = prost_types::Timestamp {
            seconds: 0,
            nanos: 1_000_000_000,
        };
        let err = required_timestamp(Some(bad_nanos), "time").unwrap_err();
        assert!(
            matches!(err, ConversionError::OutOfRange { ref field, .. } if field == "time.nanos")
        );
        let negative_nanos = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert!(timestamp_from_wire(negative_nanos).is_err());

        let too_far = prost_types::Timestamp {
            seconds: i64::MAX / 100,
            nanos: 0,
        };
        let err = timestamp_from_wire(too_far).unwrap_err();
        assert_eq!(err.field(), "seconds");

        assert_eq!(
            required_timestamp(None, "creation_date"),
            Err(ConversionError::missing("creation_date"))
        );
        assert_eq!(optional_timestamp(None, "modified"), Ok(None));
    }

    proptest! {
        #[test]
        fn timestamps_round_trip(millis in any::<i64>()) {
            let time = Timestamp::from_unix_millis(millis);
            let wire = timestamp_to_wire(time);
            prop_assert!((0..1_000_000_000).contains(&wire.nanos));
            prop_assert_eq!(timestamp_from_wire(wire), Ok(time));
        }
    }
}
