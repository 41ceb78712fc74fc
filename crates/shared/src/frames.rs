//! The size limits every AMQP publish must fit, checked before sending: a message whose content
//! header (properties and headers) is larger than the connection's negotiated `frame_max`, or
//! whose body is larger than the broker's `max_message_size`, makes the broker close the whole
//! connection (every channel on it, every request sharing it). Refused here instead, for sure
//! and at once, it costs only its own request.

use lapin::{
    BasicProperties, Connection,
    types::{AMQPValue, FieldTable, ShortString},
};

use crate::{Settings, broker::BrokerError};

/// Bytes a job envelope adds around its payload (version, id, kind, attempts, timeout,
/// timestamp and the JSON around them: about 250 with the longest kind name), with ample margin.
/// `OFFLOAD_MAX_BODY_BYTES` plus this must fit `OFFLOAD_BROKER_MAX_MESSAGE_BYTES`.
pub const ENVELOPE_OVERHEAD_BYTES: u64 = 4096;

/// Bytes of a content header frame besides the properties: frame header (7), class, weight,
/// body size and property flags (14), frame end (1).
const HEADER_FRAME_FIXED: usize = 7 + 14 + 1;

/// The limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// The negotiated `frame_max` (bytes); a content header must fit one frame.
    pub frame_max: usize,
    /// The broker's message size limit (`OFFLOAD_BROKER_MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
}

impl MessageLimits {
    /// The limits of `connection` (its negotiated `frame_max`; 0, no limit, counts as the
    /// largest frame AMQP can describe) and of the broker `settings` name.
    pub fn of(connection: &Connection, settings: &Settings) -> Self {
        let frame_max = match connection.configuration().frame_max() {
            0 => u32::MAX,
            n => n,
        };
        MessageLimits {
            frame_max: usize::try_from(frame_max).unwrap_or(usize::MAX),
            max_message_bytes: usize::try_from(settings.broker_max_message_bytes)
                .unwrap_or(usize::MAX),
        }
    }

    /// `Ok` if a message with `properties` and a body of `body_len` bytes fits both limits;
    /// else the refusal saying which and by how much.
    pub fn check(&self, properties: &BasicProperties, body_len: usize) -> Result<(), BrokerError> {
        if body_len > self.max_message_bytes {
            return Err(BrokerError::MessageTooLarge {
                size: body_len,
                limit: self.max_message_bytes,
            });
        }
        let header = header_frame_size(properties);
        if header > self.frame_max {
            return Err(BrokerError::HeadersTooLarge {
                size: header,
                frame_max: self.frame_max,
            });
        }
        Ok(())
    }
}

/// Bytes of the content header frame that carries `properties`, as AMQP 0-9-1 encodes it.
pub fn header_frame_size(properties: &BasicProperties) -> usize {
    let short = |s: &Option<ShortString>| s.as_ref().map_or(0, |s| 1 + s.as_str().len());
    let shorts = [
        properties.content_type(),
        properties.content_encoding(),
        properties.correlation_id(),
        properties.reply_to(),
        properties.expiration(),
        properties.message_id(),
        properties.kind(),
        properties.user_id(),
        properties.app_id(),
        properties.cluster_id(),
    ];
    let octets = [
        properties.delivery_mode().is_some(),
        properties.priority().is_some(),
    ];
    HEADER_FRAME_FIXED
        + shorts.iter().map(|s| short(s)).sum::<usize>()
        + octets.iter().filter(|set| **set).count()
        + properties.timestamp().map_or(0, |_| 8)
        + properties.headers().as_ref().map_or(0, table_size)
}

/// Encoded bytes of a field table: its length prefix and every `name, type, value`.
fn table_size(table: &FieldTable) -> usize {
    4 + table
        .inner()
        .iter()
        .map(|(name, value)| 1 + name.as_str().len() + 1 + value_size(value))
        .sum::<usize>()
}

/// Encoded bytes of a field value, without its type octet.
fn value_size(value: &AMQPValue) -> usize {
    match value {
        AMQPValue::Boolean(_) | AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => 1,
        AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => 2,
        AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) | AMQPValue::Float(_) => 4,
        AMQPValue::DecimalValue(_) => 5,
        AMQPValue::LongLongInt(_) | AMQPValue::Double(_) | AMQPValue::Timestamp(_) => 8,
        AMQPValue::ShortString(s) => 1 + s.as_str().len(),
        AMQPValue::LongString(s) => 4 + s.len(),
        AMQPValue::ByteArray(b) => 4 + b.len(),
        AMQPValue::FieldArray(items) => {
            4 + items
                .as_slice()
                .iter()
                .map(|v| 1 + value_size(v))
                .sum::<usize>()
        }
        AMQPValue::FieldTable(t) => table_size(t),
        AMQPValue::Void => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::LongString;

    fn with_header(value: &str) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-request-id".into(),
            AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
        );
        crate::broker::persistent_json().with_headers(headers)
    }

    #[test]
    fn a_header_frame_is_measured_as_it_is_encoded() {
        // content_type (1 + 16), delivery_mode (1), headers (4 + 1 + 12 + 1 + 4 + 3).
        let size = header_frame_size(&with_header("abc"));
        assert_eq!(size, HEADER_FRAME_FIXED + 17 + 1 + 25);
    }

    #[test]
    fn oversized_headers_and_bodies_are_refused_with_the_limit() {
        let limits = MessageLimits {
            frame_max: 131_072,
            max_message_bytes: 1000,
        };
        assert!(limits.check(&with_header("abc"), 1000).is_ok());
        assert!(matches!(
            limits.check(&with_header("abc"), 1001),
            Err(BrokerError::MessageTooLarge {
                size: 1001,
                limit: 1000
            })
        ));
        let big = "x".repeat(150 * 1024);
        assert!(matches!(
            limits.check(&with_header(&big), 10),
            Err(BrokerError::HeadersTooLarge {
                frame_max: 131_072,
                ..
            })
        ));
    }
}
