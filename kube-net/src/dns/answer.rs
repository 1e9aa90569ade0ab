//! One query in, one answer out: decoding with hickory-proto, the lookup in the [`Zone`], and
//! encoding with truncation to what the transport and the client's EDNS allow.

use hickory_proto::ProtoError;
use hickory_proto::op::ResponseCode;
use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query,
};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

use super::records;
use super::zone::{Found, Zone};

/// The largest UDP payload we accept and offer (the size of our receive buffers).
pub(crate) const MAX_UDP_PAYLOAD: u16 = 4096;

/// The payload a client without EDNS can take over UDP (RFC 1035).
const CLASSIC_UDP_PAYLOAD: u16 = 512;

/// The size of an OPT record without options: root name, type, class, TTL, RDLENGTH.
const OPT_LEN: u16 = 11;

/// How the query came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// UDP: answers are cut to 512 bytes or the client's EDNS payload size.
    Udp,
    /// TCP: answers up to 65535 bytes.
    Tcp,
}

/// A decoded query with one question.
#[derive(Debug)]
pub(crate) struct Request {
    message: Message,
    /// The largest answer the client takes.
    limit: u16,
}

impl Request {
    /// The one question.
    pub(crate) fn query(&self) -> &Query {
        // `handle` only makes requests of messages with exactly one question.
        &self.message.queries[0]
    }
}

/// What to do with a packet.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The answer is in the output buffer.
    Reply,
    /// Nothing to say (a response, or too short to carry an id).
    Drop,
    /// Not a name of ours: forward the packet upstream.
    Forward(Box<Request>),
    /// An ExternalName: answer `cname`, and the records of its target from upstream.
    Chase(Box<Request>, Box<Record>),
}

/// The sections of an answer, borrowing from the zone.
#[derive(Debug, Default)]
struct Reply<'a> {
    rcode: ResponseCode,
    authoritative: bool,
    answers: Vec<&'a Record>,
    authorities: Vec<&'a Record>,
    additionals: Vec<&'a Record>,
}

impl<'a> Reply<'a> {
    fn code(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            ..Self::default()
        }
    }

    /// NXDOMAIN or NODATA: the zone's SOA in the authority section says for how long.
    fn negative(rcode: ResponseCode, soa: &'a Record) -> Self {
        Self {
            rcode,
            authoritative: true,
            authorities: vec![soa],
            ..Self::default()
        }
    }
}

/// Answers `packet` from `zone` into `out`, or says what else to do. `recursion`: whether we
/// forward (names outside our zones are refused without it).
pub(crate) fn handle(
    zone: &Zone,
    packet: &[u8],
    transport: Transport,
    recursion: bool,
    out: &mut Vec<u8>,
) -> Outcome {
    let message = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => return format_error(packet, recursion, out),
    };
    if message.metadata.message_type == MessageType::Response {
        return Outcome::Drop;
    }
    let limit = match transport {
        Transport::Tcp => u16::MAX,
        Transport::Udp => message
            .edns
            .as_ref()
            .map_or(CLASSIC_UDP_PAYLOAD, Edns::max_payload)
            .clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD),
    };
    let request = Request { message, limit };
    let reply = if request.message.metadata.op_code != OpCode::Query {
        Reply::code(ResponseCode::NotImp)
    } else if request.message.queries.len() != 1 {
        Reply::code(ResponseCode::FormErr)
    } else if request
        .message
        .edns
        .as_ref()
        .is_some_and(|e| e.version() > 0)
    {
        Reply::code(ResponseCode::BADVERS)
    } else {
        let query = request.query();
        let found = resolve(zone, query);
        match found {
            Resolved::Reply(reply) => reply,
            Resolved::Pod(record) => {
                let reply = Reply {
                    authoritative: true,
                    answers: vec![&record],
                    ..Reply::default()
                };
                return encode_or_fail(&request, &reply, recursion, out);
            }
            Resolved::Forward if recursion => return Outcome::Forward(Box::new(request)),
            Resolved::Forward => Reply::code(ResponseCode::Refused),
            Resolved::Chase(cname) if recursion => {
                return Outcome::Chase(Box::new(request), Box::new(cname));
            }
            Resolved::Chase(cname) => {
                let reply = Reply {
                    authoritative: true,
                    answers: vec![&cname],
                    ..Reply::default()
                };
                return encode_or_fail(&request, &reply, recursion, out);
            }
        }
    };
    encode_or_fail(&request, &reply, recursion, out)
}

/// The answer to an ExternalName query: `cname`, then what upstream said of its target
/// (`upstream`: its answer, or `None` when it could not be asked).
pub(crate) fn chased(
    request: &Request,
    cname: &Record,
    upstream: Option<&Message>,
    out: &mut Vec<u8>,
) {
    let mut reply = Reply {
        authoritative: true,
        answers: vec![cname],
        ..Reply::default()
    };
    if let Some(upstream) = upstream {
        // RFC 6604: the code is the one of the last name in the chain.
        if upstream.metadata.response_code == ResponseCode::NXDomain {
            reply.rcode = ResponseCode::NXDomain;
        }
        reply.answers.extend(upstream.answers.iter());
    }
    encode_or_fail(request, &reply, true, out);
}

/// A bare answer with `rcode` (SERVFAIL when upstream fails).
pub(crate) fn code(request: &Request, rcode: ResponseCode, recursion: bool, out: &mut Vec<u8>) {
    encode_or_fail(request, &Reply::code(rcode), recursion, out);
}

/// What the zone says of one question.
enum Resolved<'a> {
    Reply(Reply<'a>),
    /// A synthesized pod record.
    Pod(Record),
    Forward,
    /// An ExternalName whose target is outside the cluster.
    Chase(Record),
}

fn resolve<'a>(zone: &'a Zone, query: &Query) -> Resolved<'a> {
    let name = query.name();
    let qtype = query.query_type();
    let Some(authority) = zone.authority(name) else {
        return Resolved::Forward;
    };
    let found = zone.find(name);
    if matches!(found, Found::Elsewhere) {
        return Resolved::Forward;
    }
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY)
        || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
    {
        return Resolved::Reply(Reply::code(ResponseCode::Refused));
    }
    let soa = zone.soa(authority);
    let node = match found {
        Found::Elsewhere => return Resolved::Forward,
        Found::Missing => return Resolved::Reply(Reply::negative(ResponseCode::NXDomain, soa)),
        Found::Pod(ip) => {
            let data = records::address(ip);
            if qtype == data.record_type() || qtype == RecordType::ANY {
                // The owner is the question's name, in lower case like the zone's.
                return Resolved::Pod(Record::from_rdata(name.to_lowercase(), zone.ttl(), data));
            }
            return Resolved::Reply(Reply::negative(ResponseCode::NoError, soa));
        }
        Found::Node(node) => node,
    };
    let answers: Vec<&Record> = node
        .records
        .iter()
        .filter(|r| r.record_type() == qtype || qtype == RecordType::ANY)
        .collect();
    if answers.is_empty() {
        let cname = node
            .records
            .iter()
            .find(|r| r.record_type() == RecordType::CNAME);
        return match cname {
            Some(cname) => follow(zone, cname, qtype),
            None => Resolved::Reply(Reply::negative(ResponseCode::NoError, soa)),
        };
    }
    let mut additionals = Vec::new();
    if qtype == RecordType::SRV {
        for answer in &answers {
            if let RData::SRV(srv) = &answer.data {
                additionals.extend(zone.addresses(&srv.target));
            }
        }
    }
    Resolved::Reply(Reply {
        rcode: ResponseCode::NoError,
        authoritative: true,
        answers,
        authorities: Vec::new(),
        additionals,
    })
}

/// A CNAME answer: its target's records come from the zone when the target is ours, else
/// from upstream.
fn follow<'a>(zone: &'a Zone, cname: &'a Record, qtype: RecordType) -> Resolved<'a> {
    let RData::CNAME(target) = &cname.data else {
        return Resolved::Reply(Reply::code(ResponseCode::ServFail));
    };
    let target: &Name = &target.0;
    if zone.authority(target).is_none() {
        return Resolved::Chase(cname.clone());
    }
    let mut answers = vec![cname];
    if let Found::Node(node) = zone.find(target) {
        // One step only: a Service's CNAME never points at another CNAME of ours in practice,
        // and a loop must not hang us.
        answers.extend(node.records.iter().filter(|r| r.record_type() == qtype));
    }
    Resolved::Reply(Reply {
        rcode: ResponseCode::NoError,
        authoritative: true,
        answers,
        ..Reply::default()
    })
}

/// FORMERR for a query we cannot decode, if it carries at least a header.
fn format_error(packet: &[u8], recursion: bool, out: &mut Vec<u8>) -> Outcome {
    let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
        return Outcome::Drop;
    };
    if header.metadata.message_type == MessageType::Response {
        return Outcome::Drop;
    }
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = ResponseCode::FormErr;
    metadata.recursion_available = recursion;
    out.clear();
    let mut encoder = BinEncoder::new(out);
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    if header.emit(&mut encoder).is_err() {
        return Outcome::Drop;
    }
    Outcome::Reply
}

/// Encodes `reply`; if that fails (it should not), a bare SERVFAIL.
fn encode_or_fail(
    request: &Request,
    reply: &Reply<'_>,
    recursion: bool,
    out: &mut Vec<u8>,
) -> Outcome {
    if encode(request, reply, recursion, out).is_err() {
        let fail = Reply::code(ResponseCode::ServFail);
        if encode(request, &fail, recursion, out).is_err() {
            return Outcome::Drop;
        }
    }
    Outcome::Reply
}

/// Writes the answer: the question echoed as asked, then as many records as fit in the
/// request's limit. When the answer or authority section does not fit, the reply carries only
/// the question with TC set, so the client retries over TCP; additional records that do not
/// fit are left out without TC (RFC 2181 section 9).
fn encode(
    request: &Request,
    reply: &Reply<'_>,
    recursion: bool,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    let mut metadata = Metadata::response_from_request(&request.message.metadata);
    metadata.authoritative = reply.authoritative;
    metadata.recursion_available = recursion;
    metadata.response_code = reply.rcode;
    let edns = request.message.edns.as_ref().map(|_| {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD)
            .set_rcode_high(reply.rcode.high());
        edns
    });
    let opt_len = if edns.is_some() { OPT_LEN } else { 0 };

    out.clear();
    let mut encoder = BinEncoder::new(out);
    encoder.set_max_size(request.limit.saturating_sub(opt_len));
    let place = encoder.place::<Header>()?;
    let mut counts = HeaderCounts::default();
    for query in &request.message.queries {
        query.emit(&mut encoder)?;
        counts.queries += 1;
    }
    let after_question = encoder.offset();
    let sections = emit_all(&mut encoder, &reply.answers).and_then(|answers| {
        emit_all(&mut encoder, &reply.authorities).map(|authorities| (answers, authorities))
    });
    match sections {
        Ok((answers, authorities)) => {
            counts.answers = answers;
            counts.authorities = authorities;
            // Additional records that do not fit are left out; those written stay.
            counts.additionals =
                emit_all(&mut encoder, &reply.additionals).unwrap_or_else(|written| written);
        }
        Err(_) => {
            encoder.set_offset(after_question);
            encoder.trim();
            metadata.truncation = true;
        }
    }
    encoder.set_max_size(request.limit);
    if let Some(edns) = &edns {
        edns.emit(&mut encoder)?;
        counts.additionals += 1;
    }
    encoder.trim();
    place.replace(&mut encoder, Header { metadata, counts })?;
    Ok(())
}

/// Emits `records`: how many, or `Err` with how many fit before one did not (a record cut
/// short is rolled back).
fn emit_all(encoder: &mut BinEncoder<'_>, records: &[&Record]) -> Result<u16, u16> {
    let clamp = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    let start = encoder.offset();
    match encoder.emit_iter(&mut records.iter().copied()) {
        Ok(n) => Ok(clamp(n)),
        Err(ProtoError::NotAllRecordsWritten { count, .. }) => Err(clamp(count)),
        Err(_) => {
            // Not a size problem (a record hickory cannot encode): drop the whole section.
            encoder.set_offset(start);
            encoder.trim();
            Err(0)
        }
    }
}
