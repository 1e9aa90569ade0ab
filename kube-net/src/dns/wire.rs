//! Just enough of the DNS wire format (RFC 1035) to answer one-question queries with A records.

use std::net::Ipv4Addr;

/// A parsed query: its id, flags, the question's name (lower case, no trailing dot), type and
/// class, and the raw question bytes to echo back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Query<'a> {
    pub(crate) id: u16,
    pub(crate) flags: u16,
    pub(crate) name: String,
    pub(crate) qtype: u16,
    pub(crate) qclass: u16,
    question: &'a [u8],
}

pub(crate) const TYPE_A: u16 = 1;
pub(crate) const CLASS_IN: u16 = 1;

/// Response codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rcode {
    NoError = 0,
    FormErr = 1,
    NxDomain = 3,
    NotImp = 4,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Parses a query with exactly one question; `None` for anything else (dropped, or FORMERR).
pub(crate) fn parse(packet: &[u8]) -> Option<Query<'_>> {
    let id = u16_at(packet, 0)?;
    let flags = u16_at(packet, 2)?;
    let qdcount = u16_at(packet, 4)?;
    // Responses (QR set) are never answered; only one question is supported, as everywhere.
    if flags & 0x8000 != 0 || qdcount != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = usize::from(*packet.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        // Compression pointers cannot appear in the first question.
        if len > 63 {
            return None;
        }
        let label = packet.get(i..i + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16_at(packet, i)?;
    let qclass = u16_at(packet, i + 2)?;
    Some(Query {
        id,
        flags,
        name: labels.join("."),
        qtype,
        qclass,
        question: packet.get(12..i + 4)?,
    })
}

/// The response to `query`: authoritative, with `answers` as A records of `ttl` seconds.
pub(crate) fn respond(query: &Query<'_>, rcode: Rcode, answers: &[Ipv4Addr], ttl: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + query.question.len() + answers.len() * 16);
    out.extend_from_slice(&query.id.to_be_bytes());
    // QR, AA, and the query's opcode and RD bits; RA unset (we do not recurse).
    let flags = 0x8000 | 0x0400 | (query.flags & 0x7900) | rcode as u16;
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    let count = u16::try_from(answers.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(query.question);
    for ip in answers.iter().take(usize::from(count)) {
        // Name: a pointer to the question's name at offset 12.
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// A FORMERR reply carrying only the id (when the question cannot be parsed).
pub(crate) fn format_error(packet: &[u8]) -> Option<Vec<u8>> {
    let id = packet.get(0..2)?;
    let mut out = id.to_vec();
    out.extend_from_slice(&(0x8000u16 | Rcode::FormErr as u16).to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    Some(out)
}

#[cfg(test)]
pub(crate) fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_query_and_builds_an_answer() {
        let packet = query(0x1234, "Web.Default.svc.cluster.local", TYPE_A);
        let q = parse(&packet).unwrap();
        assert_eq!(q.name, "web.default.svc.cluster.local");
        assert_eq!((q.id, q.qtype, q.qclass), (0x1234, TYPE_A, CLASS_IN));
        let answer = respond(&q, Rcode::NoError, &[Ipv4Addr::new(10, 96, 0, 10)], 5);
        assert_eq!(&answer[0..2], &[0x12, 0x34]);
        assert_eq!(u16_at(&answer, 6), Some(1), "one answer");
        assert_eq!(&answer[answer.len() - 4..], &[10, 96, 0, 10]);
        assert!(parse(&answer).is_none(), "responses are not queries");
        assert!(parse(&packet[..packet.len() - 3]).is_none(), "truncated");
    }
}
