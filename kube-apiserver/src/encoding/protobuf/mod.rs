//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which kubectl's
//! `create <kind>` and `run` send: the `k8s\0` envelope around a `runtime.Unknown` that holds
//! the object's type and bytes. The bytes are decoded into the object's JSON by field tables
//! ([`schema`]) written from Kubernetes' `generated.proto`.
//!
//! Go's encoder writes every non-pointer field, zero or not. So a field the tables do not know
//! is accepted only when its value is zero (what the JSON form leaves out or reads as the
//! default); anything else is refused with the field's path, so nothing a client sent is
//! silently dropped. Empty strings are left out, as Go's `omitempty` leaves them out of JSON;
//! numbers and booleans are kept, since a pointer field's explicit 0 or `false` means something
//! (`replicas: 0`, `automountServiceAccountToken: false`).

mod schema;

use base64::Engine as _;
use serde_json::{Map, Value};

/// How a field's value is encoded and shown in JSON.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ty {
    Str,
    Int32,
    Int64,
    Bool,
    /// A nested message.
    Msg(&'static [Field]),
    /// A nested message whose fields JSON shows in the parent (a Go struct embedded with
    /// `json:",inline"`).
    Inline(&'static [Field]),
    /// `meta.v1.Time` (`seconds = 1`, `nanos = 2`), shown as RFC 3339.
    Time,
    /// `resource.Quantity` (`string = 1`).
    Quantity,
    /// `intstr.IntOrString` (`type = 1`, `intVal = 2`, `strVal = 3`).
    IntOrString,
    /// `map<string, string>`.
    MapStr,
    /// `map<string, bytes>`, values shown base64-encoded.
    MapBytes,
    /// `map<string, resource.Quantity>`.
    MapQuantity,
    /// Read and dropped (an object's `status`, which a write does not set, and
    /// `managedFields`, which the server keeps).
    Ignore,
    /// A field these tables do not decode (a probe, a security context, a cloud volume, ...):
    /// accepted only when zero, like a field they do not know.
    Untabled,
}

/// One field of a message: its number, JSON name and type; `list` for `repeated`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field {
    pub(crate) num: u32,
    pub(crate) name: &'static str,
    pub(crate) ty: Ty,
    pub(crate) list: bool,
}

impl Field {
    /// A singular field.
    pub(crate) const fn one(num: u32, name: &'static str, ty: Ty) -> Self {
        Self {
            num,
            name,
            ty,
            list: false,
        }
    }

    /// A `repeated` field.
    pub(crate) const fn list(num: u32, name: &'static str, ty: Ty) -> Self {
        Self {
            num,
            name,
            ty,
            list: true,
        }
    }
}

/// Why a protobuf body was not decoded.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The kind has no table here (answered 415: the client should send JSON).
    Unsupported(String),
    /// The bytes are not a valid body (answered 400).
    Invalid(String),
}

/// One field as it is on the wire.
#[derive(Clone, Copy)]
pub(crate) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of one message, in order (`None` if the bytes are not a well-formed message).
pub(crate) fn fields(mut bytes: &[u8]) -> Option<Vec<(u32, Wire<'_>)>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let num = u32::try_from(key >> 3).ok()?;
        let wire = match key & 7 {
            0 => Wire::Varint(varint(&mut bytes)?),
            1 => {
                let (head, rest) = bytes.split_first_chunk::<8>()?;
                bytes = rest;
                Wire::Fixed64(u64::from_le_bytes(*head))
            }
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                if len > bytes.len() {
                    return None;
                }
                let (head, rest) = bytes.split_at(len);
                bytes = rest;
                Wire::Bytes(head)
            }
            5 => {
                let (head, rest) = bytes.split_first_chunk::<4>()?;
                bytes = rest;
                Wire::Fixed32(u32::from_le_bytes(*head))
            }
            _ => return None,
        };
        out.push((num, wire));
    }
    Some(out)
}

/// Whether an unknown field holds its type's zero value (for a message: only zero fields).
fn is_zero(wire: Wire<'_>, depth: usize) -> bool {
    match wire {
        Wire::Varint(v) | Wire::Fixed64(v) => v == 0,
        Wire::Fixed32(v) => v == 0,
        Wire::Bytes([]) => true,
        Wire::Bytes(b) => {
            depth < 8
                && fields(b).is_some_and(|fs| fs.into_iter().all(|(_, w)| is_zero(w, depth + 1)))
        }
    }
}

/// Decodes a protobuf request body into the object's JSON.
pub(crate) fn decode(body: &[u8]) -> Result<Value, Refusal> {
    let invalid = |why: &str| Refusal::Invalid(format!("undecodable protobuf body: {why}"));
    let unknown = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| invalid("it does not start with the k8s\\0 magic"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    // runtime.Unknown: typeMeta = 1 (apiVersion = 1, kind = 2), raw = 2, contentEncoding = 3.
    for (num, wire) in fields(unknown).ok_or_else(|| invalid("a malformed envelope"))? {
        match (num, wire) {
            (1, Wire::Bytes(type_meta)) => {
                for (n, w) in fields(type_meta).ok_or_else(|| invalid("malformed typeMeta"))? {
                    match (n, w) {
                        (1, Wire::Bytes(b)) => api_version = text(b, "apiVersion")?,
                        (2, Wire::Bytes(b)) => kind = text(b, "kind")?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(bytes)) => raw = bytes,
            (3, Wire::Bytes(encoding)) if !encoding.is_empty() => {
                return Err(Refusal::Unsupported(
                    "protobuf bodies with a content encoding are not supported; send JSON".into(),
                ));
            }
            _ => {}
        }
    }
    let Some((_, _, table)) = schema::KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
    else {
        return Err(Refusal::Unsupported(format!(
            "protobuf bodies of {api_version} {kind} are not supported here; send JSON"
        )));
    };
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind.clone()));
    object.extend(message(raw, table, &kind)?);
    Ok(Value::Object(object))
}

fn text(bytes: &[u8], path: &str) -> Result<String, Refusal> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Refusal::Invalid(format!("{path}: a string that is not UTF-8")))
}

fn bytes_of<'a>(wire: Wire<'a>, path: &str) -> Result<&'a [u8], Refusal> {
    match wire {
        Wire::Bytes(b) => Ok(b),
        _ => Err(Refusal::Invalid(format!(
            "{path}: expected a length-delimited value"
        ))),
    }
}

fn number(wire: Wire<'_>, path: &str) -> Result<u64, Refusal> {
    match wire {
        Wire::Varint(v) => Ok(v),
        _ => Err(Refusal::Invalid(format!("{path}: expected a varint"))),
    }
}

fn message(bytes: &[u8], table: &[Field], path: &str) -> Result<Map<String, Value>, Refusal> {
    let mut out = Map::new();
    let wires = fields(bytes)
        .ok_or_else(|| Refusal::Invalid(format!("{path}: a malformed protobuf message")))?;
    for (num, wire) in wires {
        let Some(field) = table.iter().find(|f| f.num == num) else {
            if is_zero(wire, 0) {
                continue;
            }
            return Err(Refusal::Unsupported(format!(
                "{path}: field number {num} is set, and this server's protobuf decoder does not know it; send JSON"
            )));
        };
        let here = format!("{path}.{}", field.name);
        let value = match field.ty {
            Ty::Ignore => continue,
            Ty::Untabled if is_zero(wire, 0) => continue,
            Ty::Untabled => {
                return Err(Refusal::Unsupported(format!(
                    "{here} is set, and this server does not decode it from protobuf; send JSON"
                )));
            }
            Ty::Inline(table) => {
                out.extend(message(bytes_of(wire, &here)?, table, path)?);
                continue;
            }
            Ty::MapStr | Ty::MapBytes | Ty::MapQuantity => {
                let (key, value) = map_entry(bytes_of(wire, &here)?, field.ty, &here)?;
                if let Value::Object(map) = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Object(Map::new()))
                {
                    map.insert(key, value);
                }
                continue;
            }
            // An element of a repeated string is kept even when empty (`apiGroups: [""]`).
            Ty::Str if field.list => Value::String(text(bytes_of(wire, &here)?, &here)?),
            ty => match value(wire, ty, &here)? {
                Some(value) => value,
                None => continue,
            },
        };
        if field.list {
            if let Value::Array(items) = out
                .entry(field.name)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                items.push(value);
            }
        } else {
            out.insert(field.name.to_string(), value);
        }
    }
    Ok(out)
}

/// A single value; `None` for what JSON leaves out (an empty string, a zero time).
fn value(wire: Wire<'_>, ty: Ty, path: &str) -> Result<Option<Value>, Refusal> {
    Ok(Some(match ty {
        Ty::Str => {
            let s = text(bytes_of(wire, path)?, path)?;
            if s.is_empty() {
                return Ok(None);
            }
            Value::String(s)
        }
        // int32 and int64 travel as two's-complement varints.
        Ty::Int32 => Value::from(number(wire, path)? as i64 as i32),
        Ty::Int64 => Value::from(number(wire, path)? as i64),
        Ty::Bool => Value::Bool(number(wire, path)? != 0),
        Ty::Msg(table) => Value::Object(message(bytes_of(wire, path)?, table, path)?),
        Ty::Time => {
            let (mut seconds, mut nanos) = (0i64, 0i64);
            for (num, w) in fields(bytes_of(wire, path)?)
                .ok_or_else(|| Refusal::Invalid(format!("{path}: a malformed time")))?
            {
                match num {
                    1 => seconds = number(w, path)? as i64,
                    2 => nanos = number(w, path)? as i64,
                    _ => {}
                }
            }
            if seconds == 0 && nanos == 0 {
                return Ok(None);
            }
            Value::String(rfc3339(seconds))
        }
        Ty::Quantity => {
            let mut quantity = String::new();
            for (num, w) in fields(bytes_of(wire, path)?)
                .ok_or_else(|| Refusal::Invalid(format!("{path}: a malformed quantity")))?
            {
                if num == 1 {
                    quantity = text(bytes_of(w, path)?, path)?;
                }
            }
            Value::String(quantity)
        }
        Ty::IntOrString => {
            let (mut is_string, mut int, mut string) = (false, 0i64, String::new());
            for (num, w) in fields(bytes_of(wire, path)?)
                .ok_or_else(|| Refusal::Invalid(format!("{path}: a malformed int-or-string")))?
            {
                match num {
                    1 => is_string = number(w, path)? == 1,
                    2 => int = i64::from(number(w, path)? as i64 as i32),
                    3 => string = text(bytes_of(w, path)?, path)?,
                    _ => {}
                }
            }
            if is_string {
                Value::String(string)
            } else {
                Value::from(int)
            }
        }
        Ty::MapStr | Ty::MapBytes | Ty::MapQuantity | Ty::Inline(_) | Ty::Ignore | Ty::Untabled => {
            return Ok(None);
        }
    }))
}

/// One `map<string, V>` entry: `key = 1`, `value = 2`.
fn map_entry(bytes: &[u8], ty: Ty, path: &str) -> Result<(String, Value), Refusal> {
    let (mut key, mut value) = (String::new(), None);
    for (num, wire) in
        fields(bytes).ok_or_else(|| Refusal::Invalid(format!("{path}: a malformed map entry")))?
    {
        match num {
            1 => key = text(bytes_of(wire, path)?, path)?,
            2 => value = Some(wire),
            _ => {}
        }
    }
    let empty = Wire::Bytes(&[]);
    let wire = value.unwrap_or(empty);
    let value = match ty {
        // A map's empty string is a value, not an absence.
        Ty::MapStr => Value::String(text(bytes_of(wire, path)?, path)?),
        Ty::MapBytes => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes_of(wire, path)?))
        }
        _ => quantity_or_empty(wire, path)?,
    };
    Ok((key, value))
}

/// A `map<string, Quantity>` value (an absent one reads as the empty quantity).
fn quantity_or_empty(wire: Wire<'_>, path: &str) -> Result<Value, Refusal> {
    Ok(value(wire, Ty::Quantity, path)?.unwrap_or_else(|| Value::String(String::new())))
}

/// `seconds` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (Howard Hinnant's civil-from-days).
fn rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes `(field number, wire)` pairs, for building bodies in tests.
    fn encode(fields: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (num, payload) in fields {
            put_varint(&mut out, u64::from(*num) << 3 | 2);
            put_varint(&mut out, payload.len() as u64);
            out.extend_from_slice(payload);
        }
        out
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn varint_field(num: u32, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, u64::from(num) << 3);
        put_varint(&mut out, v);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let type_meta = encode(&[(1, api_version.into()), (2, kind.into())]);
        let mut body = b"k8s\0".to_vec();
        body.extend(encode(&[(1, type_meta), (2, raw)]));
        body
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn a_config_map_decodes_and_zero_unknown_fields_pass() {
        let meta = encode(&[(1, b"settings".to_vec()), (3, Vec::new())]);
        let entry = encode(&[(1, b"mode".to_vec()), (2, b"fast".to_vec())]);
        let mut raw = encode(&[(1, meta), (2, entry)]);
        raw.extend(varint_field(99, 0));
        let value = match decode(&envelope("v1", "ConfigMap", raw)) {
            Ok(value) => value,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(
            value,
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings"}, "data": {"mode": "fast"}})
        );
    }

    #[test]
    fn set_unknown_fields_unknown_kinds_and_garbage_are_refused() {
        let mut raw = encode(&[(1, encode(&[(1, b"x".to_vec())]))]);
        raw.extend(varint_field(99, 7));
        assert!(matches!(
            decode(&envelope("v1", "ConfigMap", raw)),
            Err(Refusal::Unsupported(why)) if why.contains("field number 99")
        ));
        assert!(matches!(
            decode(&envelope("example.com/v1", "Widget", Vec::new())),
            Err(Refusal::Unsupported(_))
        ));
        assert!(matches!(decode(b"{}"), Err(Refusal::Invalid(_))));
        assert!(matches!(decode(b"k8s\0\x0a\xff"), Err(Refusal::Invalid(_))));
    }
}
