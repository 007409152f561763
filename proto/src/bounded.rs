//! The codec of every `clouddp.v1` service: prost, with the contract's field limits checked on the encoded bytes
//! of each request before it is decoded, so an oversized field costs neither a copy nor any work.
//!
//! The limits come from the descriptor set: every message reachable from an RPC's request type gets, per field,
//! the bound its type and name call for (`clouddp_core::limits`: strings, PEM strings, bytes, list entries).
//! Only request types are walked (a type that is also an answer is not), so a client decoding answers pays
//! nothing and is never refused an answer.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::LazyLock;

use bytes::Buf as _;
use clouddp_core::limits;
use prost::encoding::{WireType, decode_key, decode_varint};
use prost_types::field_descriptor_proto::{Label, Type};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Nesting deeper than this is refused (the contract nests three levels).
const MAX_DEPTH: usize = 16;

/// What one field may hold.
#[derive(Debug, Clone)]
struct FieldBound {
    name: String,
    /// Longest encoded value, for strings and bytes.
    max_len: Option<usize>,
    /// Most entries, for repeated fields and maps.
    max_entries: Option<usize>,
    /// The message type, for message fields.
    message: Option<String>,
}

type Bounds = HashMap<String, HashMap<u32, FieldBound>>;

/// The bounds, and the request types a walk starts from.
#[derive(Debug, Default)]
struct Contract {
    requests: std::collections::HashSet<String>,
    bounds: Bounds,
}

/// The bound of `field` by its type and name.
fn bound_of(field: &prost_types::FieldDescriptorProto) -> FieldBound {
    let name = field.name().to_owned();
    let max_len = match field.r#type() {
        Type::String if name.ends_with("_pem") => Some(limits::MAX_PEM_BYTES),
        Type::String => Some(limits::MAX_STRING_BYTES),
        Type::Bytes => Some(limits::MAX_BYTES_FIELD),
        _ => None,
    };
    let max_entries = (field.label() == Label::Repeated).then_some(match name.as_str() {
        "device_ids" | "user_ids" => limits::MAX_PRINCIPALS,
        _ => limits::MAX_LIST_ENTRIES,
    });
    let message = (field.r#type() == Type::Message)
        .then(|| field.type_name().trim_start_matches('.').to_owned());
    FieldBound {
        name,
        max_len,
        max_entries,
        message,
    }
}

/// The bounds of every message a request of the contract reaches, by full name.
fn request_bounds() -> Contract {
    let Ok(set) =
        <prost_types::FileDescriptorSet as prost::Message>::decode(crate::FILE_DESCRIPTOR_SET)
    else {
        return Contract::default();
    };
    let mut messages: HashMap<String, &prost_types::DescriptorProto> = HashMap::new();
    fn collect<'a>(
        prefix: &str,
        message: &'a prost_types::DescriptorProto,
        into: &mut HashMap<String, &'a prost_types::DescriptorProto>,
    ) {
        let name = format!("{prefix}.{}", message.name());
        for nested in &message.nested_type {
            collect(&name, nested, into);
        }
        into.insert(name, message);
    }
    for file in &set.file {
        for message in &file.message_type {
            collect(file.package(), message, &mut messages);
        }
    }
    let methods: Vec<&prost_types::MethodDescriptorProto> = set
        .file
        .iter()
        .filter(|file| file.package() == "clouddp.v1")
        .flat_map(|file| &file.service)
        .flat_map(|service| &service.method)
        .collect();
    let name = |full: &str| full.trim_start_matches('.').to_owned();
    let answers: std::collections::HashSet<String> = methods
        .iter()
        .map(|method| name(method.output_type()))
        .collect();
    let requests: std::collections::HashSet<String> = methods
        .iter()
        .map(|method| name(method.input_type()))
        .filter(|input| !answers.contains(input))
        .collect();
    let mut pending: Vec<String> = requests.iter().cloned().collect();
    let mut bounds = Bounds::new();
    while let Some(name) = pending.pop() {
        if bounds.contains_key(&name) {
            continue;
        }
        let Some(message) = messages.get(&name) else {
            continue;
        };
        let fields: HashMap<u32, FieldBound> = message
            .field
            .iter()
            .map(|field| (u32::try_from(field.number()).unwrap_or(0), bound_of(field)))
            .collect();
        pending.extend(fields.values().filter_map(|field| field.message.clone()));
        bounds.insert(name, fields);
    }
    Contract { requests, bounds }
}

static CONTRACT: LazyLock<Contract> = LazyLock::new(request_bounds);

/// Checks `bytes`, an encoded `message`, against the bounds; a message the walk cannot parse is left to prost,
/// which refuses it with its own error.
fn check(message: &str, mut bytes: &[u8], path: &str, depth: usize) -> Result<(), Status> {
    let Some(fields) = CONTRACT.bounds.get(message) else {
        return Ok(());
    };
    if depth > MAX_DEPTH {
        return Err(Status::invalid_argument(format!(
            "{path}: nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let mut entries: HashMap<u32, usize> = HashMap::new();
    while bytes.has_remaining() {
        let Ok((number, wire_type)) = decode_key(&mut bytes) else {
            return Ok(());
        };
        let field = fields.get(&number);
        let value: Option<&[u8]> = match wire_type {
            WireType::Varint => decode_varint(&mut bytes).ok().map(|_| &[][..]),
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let width = if wire_type == WireType::SixtyFourBit {
                    8
                } else {
                    4
                };
                (bytes.remaining() >= width).then(|| {
                    bytes.advance(width);
                    &[][..]
                })
            }
            WireType::LengthDelimited => decode_varint(&mut bytes)
                .ok()
                .and_then(|length| usize::try_from(length).ok())
                .filter(|length| *length <= bytes.remaining())
                .map(|length| {
                    let (value, rest) = bytes.split_at(length);
                    bytes = rest;
                    value
                }),
            // proto3 has no groups; prost skips unknown ones, and everything after one would go unchecked.
            WireType::StartGroup | WireType::EndGroup => {
                return Err(Status::invalid_argument(
                    "the request holds a group, which no message of this contract has",
                ));
            }
        };
        let (Some(value), Some(field)) = (value, field) else {
            if value.is_none() {
                return Ok(());
            }
            continue;
        };
        let name = if path.is_empty() {
            field.name.clone()
        } else {
            format!("{path}.{}", field.name)
        };
        if let Some(max) = field.max_entries {
            // A packed list holds at least one byte per entry.
            let count = entries.entry(number).or_default();
            *count += if wire_type == WireType::LengthDelimited
                && field.max_len.is_none()
                && field.message.is_none()
            {
                value.len()
            } else {
                1
            };
            if *count > max {
                return Err(Status::invalid_argument(format!(
                    "{name}: more than {} entries",
                    limits::grouped(max as u64)
                )));
            }
        }
        if let Some(max) = field.max_len
            && value.len() > max
        {
            return Err(Status::invalid_argument(format!(
                "{name}: {} bytes, more than the {} allowed",
                limits::grouped(value.len() as u64),
                limits::grouped(max as u64)
            )));
        }
        if let Some(nested) = &field.message {
            check(nested, value, &name, depth + 1)?;
        }
    }
    Ok(())
}

/// Checks an encoded `U` against the contract's limits.
pub fn check_encoded<U: prost::Name>(bytes: &[u8]) -> Result<(), Status> {
    let name = U::full_name();
    if !CONTRACT.requests.contains(&name) {
        return Ok(());
    }
    check(&name, bytes, "", 0)
}

/// The codec the generated clients and servers use: [`tonic_prost::ProstCodec`] with bounded requests.
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + prost::Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder { _type: PhantomData }
    }
}

/// Decodes a `U` once its encoded fields are within the limits.
#[derive(Debug, Clone)]
pub struct BoundedDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: prost::Message + prost::Name + Default> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if buf.chunk().len() == buf.remaining() {
            check_encoded::<U>(buf.chunk())?;
        } else {
            let bytes = buf.copy_to_bytes(buf.remaining());
            check_encoded::<U>(&bytes)?;
            return U::decode(bytes)
                .map(Some)
                .map_err(|error| Status::internal(error.to_string()));
        }
        U::decode(buf)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1 as pb;
    use prost::Message as _;

    fn refused<U: prost::Name>(message: &impl prost::Message) -> String {
        check_encoded::<U>(&message.encode_to_vec())
            .unwrap_err()
            .message()
            .to_owned()
    }

    #[test]
    fn every_request_field_is_bounded_and_answers_are_not_walked() {
        let fine = pb::RegisterDistributionPointRequest {
            name: "dp".to_owned(),
            address: "https://dp.example".to_owned(),
            ..Default::default()
        };
        assert!(
            check_encoded::<pb::RegisterDistributionPointRequest>(&fine.encode_to_vec()).is_ok()
        );
        let long = pb::RegisterDistributionPointRequest {
            address: "x".repeat(limits::MAX_STRING_BYTES + 1),
            ..fine.clone()
        };
        let message = refused::<pb::RegisterDistributionPointRequest>(&long);
        assert_eq!(message, "address: 4,097 bytes, more than the 4,096 allowed");
        let at_limit = pb::RegisterDistributionPointRequest {
            address: "x".repeat(limits::MAX_STRING_BYTES),
            ..fine
        };
        assert!(
            check_encoded::<pb::RegisterDistributionPointRequest>(&at_limit.encode_to_vec())
                .is_ok()
        );

        // Nested fields are named by their path; lists by their count.
        let settings = |devices: usize| pb::CreateClientSettingsRequest {
            settings: Some(pb::ClientSettings {
                device_ids: vec!["pc".to_owned(); devices],
                ..Default::default()
            }),
        };
        assert!(
            check_encoded::<pb::CreateClientSettingsRequest>(
                &settings(limits::MAX_PRINCIPALS).encode_to_vec()
            )
            .is_ok()
        );
        assert_eq!(
            refused::<pb::CreateClientSettingsRequest>(&settings(limits::MAX_PRINCIPALS + 1)),
            "settings.device_ids: more than 100,000 entries"
        );
        let members = pb::AddMembersRequest {
            distribution_point_ids: vec!["dp".to_owned(); limits::MAX_LIST_ENTRIES + 1],
            ..Default::default()
        };
        assert_eq!(
            refused::<pb::AddMembersRequest>(&members),
            "distribution_point_ids: more than 1,000 entries"
        );
        let hints = pb::LocateContentRequest {
            latency_hints_ms: (0..=limits::MAX_LIST_ENTRIES)
                .map(|index| (format!("dp-{index}"), 1))
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            refused::<pb::LocateContentRequest>(&hints),
            "latency_hints_ms: more than 1,000 entries"
        );
        let packed = pb::SubscribeAlertsRequest {
            kinds: vec![1; limits::MAX_LIST_ENTRIES + 1],
            ..Default::default()
        };
        assert_eq!(
            refused::<pb::SubscribeAlertsRequest>(&packed),
            "kinds: more than 1,000 entries"
        );
        let pem = pb::EnrollDeviceRequest {
            certificate_request_pem: "x".repeat(limits::MAX_STRING_BYTES * 2),
            ..Default::default()
        };
        assert!(check_encoded::<pb::EnrollDeviceRequest>(&pem.encode_to_vec()).is_ok());

        // A response type is not walked.
        let answer = pb::ListDistributionPointsResponse {
            distribution_points: vec![
                pb::DistributionPoint::default();
                limits::MAX_LIST_ENTRIES + 1
            ],
            ..Default::default()
        };
        assert!(
            check_encoded::<pb::ListDistributionPointsResponse>(&answer.encode_to_vec()).is_ok()
        );
        assert!(
            CONTRACT
                .requests
                .contains("clouddp.v1.LocateContentRequest")
        );
        assert!(!CONTRACT.requests.contains("clouddp.v1.DistributionPoint"));
        assert!(CONTRACT.bounds.contains_key("clouddp.v1.DistributionPoint"));
        assert!(
            !CONTRACT
                .bounds
                .contains_key("clouddp.v1.LocateContentResponse")
        );
    }

    #[test]
    fn a_group_cannot_hide_what_follows_it() {
        let hints = pb::LocateContentRequest {
            latency_hints_ms: (0..=limits::MAX_LIST_ENTRIES)
                .map(|index| (format!("dp-{index}"), 1))
                .collect(),
            ..Default::default()
        };
        // An empty unknown group (field 99) in front of the fields.
        let mut bytes = vec![0x9b, 0x06, 0x9c, 0x06];
        bytes.extend(hints.encode_to_vec());
        let refused = check_encoded::<pb::LocateContentRequest>(&bytes).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("group"), "{refused:?}");
    }

    #[test]
    fn bytes_that_do_not_parse_are_left_to_prost() {
        assert!(
            check_encoded::<pb::LocateContentRequest>(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])
                .is_ok()
        );
        assert!(check_encoded::<pb::LocateContentRequest>(&[0xff]).is_ok());
    }
}
