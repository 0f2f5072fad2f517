//! The edge of a distillwatch worker: `api-calls` records straight to the by-account
//! topic's msgpack, without a Python object per field.
//!
//! `EdgeDecoder.decode(value)` reads one record (a JSON event or a JSON array of events)
//! and returns, for each event, an `EdgeCall`: its event time, tenant and account (what
//! the edge orders calls by), the partition of the by-account topic it goes to, and the
//! call already encoded as `models.records.ApiCall` is on that topic (a msgpack array of
//! its 28 fields, as msgspec writes it). `encode_calls` joins the payloads of one
//! partition into an internal record, byte for byte what `streams.internal.encode_calls`
//! writes for the same calls.
//!
//! It accepts only records it reads exactly as the Python edge (`streams.fast_decode`,
//! which agrees with pydantic) does: every element a valid event, no known key twice,
//! unknown fields whose values pydantic surely reads (then ignored, as it ignores them),
//! timestamps of the RFC 3339 forms `schemas.fields` admits. For anything
//! else, a rejection or a record it is not sure of, it returns None and the record goes
//! through the Python edge as a whole, so every verdict and dead-letter reason stays
//! pydantic's. Parsing runs without the GIL.

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use std::sync::Arc;

use cells::Cells;
use edge_calls::{EdgeCalls, Row};
use fields::{f, field};

mod behaviour;
mod calls;
mod cells;
mod edge_calls;
mod evidence;
mod fields;
mod minutes;
mod observations;
mod order;
mod share;

// A strict JSON reader for the contract's event --------------------------------------------
//
// Reads exactly the JSON grammar (RFC 8259), but gives up (None) on anything the Python
// edge might read another way: a known key given twice, a number where
// its type is not the field's (`1.0` for an int, `true` for a number), an integer past 64
// bits, an unknown field's value pydantic's parser might refuse (`Reader::skip_value`).
// Giving up sends the record to the Python edge, which decides.

/// Nesting levels of an unknown field's value that `Reader::skip_value` reads.
const MAX_SKIP_DEPTH: usize = 100;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.b.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek()? == c {
            self.at += 1;
            Some(())
        } else {
            None
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.b[self.at..].starts_with(word) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    /// `null` (consumed) or not (nothing consumed).
    fn null(&mut self) -> bool {
        self.peek() == Some(b'n') && self.literal(b"null")
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' if self.literal(b"true") => Some(true),
            b'f' if self.literal(b"false") => Some(false),
            _ => None,
        }
    }

    /// How many bytes from the current one on are plain string contents (not `"`, `\\`
    /// or a control character), and whether they are all ASCII.
    fn plain(&self) -> (usize, bool) {
        let rest = &self.b[self.at..];
        let mut high = 0u8;
        for (n, &c) in rest.iter().enumerate() {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return (n, high < 0x80);
            }
            high |= c;
        }
        (rest.len(), high < 0x80)
    }

    /// A string's contents; borrowed when it has no escape.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.at;
        let (n, ascii) = self.plain();
        self.at += n;
        match *self.b.get(self.at)? {
            b'"' => {
                let bytes = &self.b[start..self.at];
                self.at += 1;
                let text = if ascii {
                    // SAFETY: every byte is below 0x80, so this is ASCII, which is UTF-8.
                    unsafe { std::str::from_utf8_unchecked(bytes) }
                } else {
                    std::str::from_utf8(bytes).ok()?
                };
                Some(Cow::Borrowed(text))
            }
            b'\\' => self.escaped_string(start),
            _ => None, // a control character must be escaped
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.at..self.at + 4)?;
        let text = std::str::from_utf8(digits).ok()?;
        if !text.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.at += 4;
        u32::from_str_radix(text, 16).ok()
    }

    fn escaped_string(&mut self, start: usize) -> Option<Cow<'a, str>> {
        let mut out: Vec<u8> = self.b[start..self.at].to_vec();
        loop {
            match *self.b.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return String::from_utf8(out).ok().map(Cow::Owned);
                }
                b'\\' => {
                    let escape = *self.b.get(self.at + 1)?;
                    self.at += 2;
                    let c = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let unit = self.hex4()?;
                            let code = match unit {
                                0xD800..=0xDBFF => {
                                    // A high surrogate must pair with a low one; a lone
                                    // surrogate is left to the Python edge.
                                    if !self.literal(b"\\u") {
                                        return None;
                                    }
                                    let low = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&low) {
                                        return None;
                                    }
                                    0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                                }
                                0xDC00..=0xDFFF => return None,
                                _ => unit,
                            };
                            char::from_u32(code)?
                        }
                        _ => return None,
                    };
                    let mut utf8 = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
                0..=0x1f => return None,
                c => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }

    /// An object key, then its colon.
    fn key(&mut self) -> Option<Cow<'a, str>> {
        let key = self.string()?;
        self.eat(b':')?;
        Some(key)
    }

    /// The text of a JSON number (RFC 8259 grammar) and whether it is an integer.
    fn number(&mut self) -> Option<(&'a str, bool)> {
        self.skip_ws();
        let b = self.b;
        let start = self.at;
        let mut at = start;
        let digits = |at: &mut usize| {
            let from = *at;
            while b.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at - from
        };
        if b.get(at) == Some(&b'-') {
            at += 1;
        }
        let whole = digits(&mut at);
        if whole == 0 || (whole > 1 && b[at - whole] == b'0') {
            return None;
        }
        let mut integer = true;
        if b.get(at) == Some(&b'.') {
            at += 1;
            if digits(&mut at) == 0 {
                return None;
            }
            integer = false;
        }
        if let Some(b'e' | b'E') = b.get(at) {
            at += 1;
            if let Some(b'+' | b'-') = b.get(at) {
                at += 1;
            }
            if digits(&mut at) == 0 {
                return None;
            }
            integer = false;
        }
        self.at = at;
        // ASCII by construction.
        Some((std::str::from_utf8(&b[start..at]).ok()?, integer))
    }

    /// A JSON integer that fits 64 bits, unsigned.
    fn uint(&mut self) -> Option<u64> {
        match self.number()? {
            (text, true) if !text.starts_with('-') => text.parse().ok(),
            _ => None,
        }
    }

    /// A JSON integer >= 0 of any length up to 1,000 digits (pydantic reads up to 4,300),
    /// for a field that is checked, not carried.
    fn any_uint(&mut self) -> Option<()> {
        match self.number()? {
            (text, true) if !text.starts_with('-') && text.len() <= 1_000 => Some(()),
            _ => None,
        }
    }

    fn int(&mut self) -> Option<i64> {
        match self.number()? {
            (text, true) if text != "-0" => text.parse().ok(),
            _ => None,
        }
    }

    /// Any JSON number as a finite float, correctly rounded as Python's `float()` reads it.
    fn float(&mut self) -> Option<f64> {
        let value: f64 = self.number()?.0.parse().ok()?;
        value.is_finite().then_some(value)
    }

    /// Skips a value of a field unknown to the contract (gateways may add fields), where
    /// pydantic's parser reads it without error: strings of UTF-8 without a lone surrogate,
    /// numbers of at most 1,000 characters, at most `MAX_SKIP_DEPTH` levels of nesting
    /// (pydantic's own limits are 4,300-digit integers and 200 levels). None otherwise.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth >= MAX_SKIP_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' => {
                self.at += 1;
                if self.peek()? == b'}' {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.string()?;
                    self.eat(b':')?;
                    self.skip_value(depth + 1)?;
                    match self.peek()? {
                        b',' => self.at += 1,
                        b'}' => break,
                        _ => return None,
                    }
                }
                self.at += 1;
            }
            b'[' => {
                self.at += 1;
                if self.peek()? == b']' {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    match self.peek()? {
                        b',' => self.at += 1,
                        b']' => break,
                        _ => return None,
                    }
                }
                self.at += 1;
            }
            b't' if self.literal(b"true") => {}
            b'f' if self.literal(b"false") => {}
            b'n' if self.literal(b"null") => {}
            _ => {
                if self.number()?.0.len() > 1_000 {
                    return None;
                }
            }
        }
        Some(())
    }

    /// `null` as None, or a value.
    fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.null() {
            Some(None)
        } else {
            read(self).map(Some)
        }
    }

    /// An object whose keys `field` reads: it is given each key once (a key seen before
    /// gives up) with the bit `seen` has for it, and reads the value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &[u8]) -> Option<u32>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        let mut seen = 0u32;
        loop {
            let key = self.key()?;
            let bit = field(self, key.as_bytes())?;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

// The event as the contract has it (`schemas/event.py`), fields not carried read and
// checked all the same.

#[derive(Default)]
struct Event<'a> {
    schema_version: Option<i64>,
    event_id: Option<Cow<'a, str>>,
    ts: Option<Cow<'a, str>>,
    tenant_id: Option<Cow<'a, str>>,
    account_id: Option<Cow<'a, str>>,
    request: Option<Request<'a>>,
    response: Option<Response<'a>>,
    prompt: Option<Prompt<'a>>,
    client: Option<Client<'a>>,
    account: Option<Account<'a>>,
}

struct Request<'a> {
    model: Option<Cow<'a, str>>,
    endpoint: Option<Cow<'a, str>>,
    temperature: Option<f64>,
    max_tokens: Option<u64>,
    n: u64,
    logprobs: bool,
    tool_count: u64,
    turn: u64,
}

#[derive(Default)]
struct Response<'a> {
    status: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Default)]
struct Prompt<'a> {
    simhash: Option<Cow<'a, str>>,
    topic: Option<Cow<'a, str>>,
    cot_request: bool,
    jailbreak_score: Option<f64>,
    sysprompt_probe: bool,
}

#[derive(Default)]
struct Client<'a> {
    ip: Option<Cow<'a, str>>,
    asn: Option<i64>,
    country: Option<Cow<'a, str>>,
    user_agent: Option<Cow<'a, str>>,
    tls_fingerprint: Option<Cow<'a, str>>,
}

#[derive(Default)]
struct Account<'a> {
    created_at: Option<Cow<'a, str>>,
    payment_fingerprint: Option<Cow<'a, str>>,
}

fn read_request<'a>(r: &mut Reader<'a>) -> Option<Request<'a>> {
    let mut q = Request {
        model: None,
        endpoint: None,
        temperature: None,
        max_tokens: None,
        n: 1,
        logprobs: false,
        tool_count: 0,
        turn: 1,
    };
    r.object(|r, key| {
        Some(match key {
            b"model" => {
                q.model = Some(r.string()?);
                1
            }
            b"endpoint" => {
                q.endpoint = r.nullable(Reader::string)?;
                2
            }
            b"temperature" => {
                q.temperature = r.nullable(Reader::float)?;
                4
            }
            b"max_tokens" => {
                q.max_tokens = r.nullable(Reader::uint)?;
                8
            }
            b"n" => {
                q.n = r.uint()?;
                16
            }
            b"logprobs" => {
                q.logprobs = r.boolean()?;
                32
            }
            b"stream" => {
                r.boolean()?;
                64
            }
            b"tool_count" => {
                q.tool_count = r.uint()?;
                128
            }
            b"turn" => {
                q.turn = r.uint()?;
                256
            }
            _ => {
                r.skip_value(0)?;
                0 // a field the contract does not know: ignored, as pydantic does
            }
        })
    })?;
    Some(q)
}

fn read_response<'a>(r: &mut Reader<'a>) -> Option<Response<'a>> {
    let mut q = Response::default();
    r.object(|r, key| {
        Some(match key {
            b"status" => {
                q.status = Some(r.uint()?);
                1
            }
            b"input_tokens" => {
                q.input_tokens = Some(r.uint()?);
                2
            }
            b"output_tokens" => {
                q.output_tokens = Some(r.uint()?);
                4
            }
            b"latency_ms" => {
                r.nullable(Reader::any_uint)?;
                8
            }
            b"stop_reason" => {
                q.stop_reason = r.nullable(Reader::string)?;
                16
            }
            _ => {
                r.skip_value(0)?;
                0 // a field the contract does not know: ignored, as pydantic does
            }
        })
    })?;
    Some(q)
}

fn read_prompt<'a>(r: &mut Reader<'a>) -> Option<Prompt<'a>> {
    let mut q = Prompt::default();
    r.object(|r, key| {
        Some(match key {
            b"simhash" => {
                q.simhash = r.nullable(Reader::string)?;
                1
            }
            b"chars" => {
                r.nullable(Reader::any_uint)?;
                2
            }
            b"topic" => {
                q.topic = r.nullable(Reader::string)?;
                4
            }
            b"cot_request" => {
                q.cot_request = r.boolean()?;
                8
            }
            b"jailbreak_score" => {
                q.jailbreak_score = r.nullable(Reader::float)?;
                16
            }
            b"sysprompt_probe" => {
                q.sysprompt_probe = r.boolean()?;
                32
            }
            _ => {
                r.skip_value(0)?;
                0 // a field the contract does not know: ignored, as pydantic does
            }
        })
    })?;
    Some(q)
}

fn read_client<'a>(r: &mut Reader<'a>) -> Option<Client<'a>> {
    let mut q = Client::default();
    r.object(|r, key| {
        Some(match key {
            b"ip" => {
                q.ip = r.nullable(Reader::string)?;
                1
            }
            b"asn" => {
                q.asn = r.nullable(Reader::int)?;
                2
            }
            b"country" => {
                q.country = r.nullable(Reader::string)?;
                4
            }
            b"user_agent" => {
                q.user_agent = r.nullable(Reader::string)?;
                8
            }
            b"tls_fingerprint" => {
                q.tls_fingerprint = r.nullable(Reader::string)?;
                16
            }
            _ => {
                r.skip_value(0)?;
                0 // a field the contract does not know: ignored, as pydantic does
            }
        })
    })?;
    Some(q)
}

fn read_account<'a>(r: &mut Reader<'a>) -> Option<Account<'a>> {
    let mut q = Account::default();
    r.object(|r, key| {
        Some(match key {
            b"created_at" => {
                q.created_at = r.nullable(Reader::string)?;
                1
            }
            b"payment_fingerprint" => {
                q.payment_fingerprint = r.nullable(Reader::string)?;
                2
            }
            _ => {
                r.skip_value(0)?;
                0 // a field the contract does not know: ignored, as pydantic does
            }
        })
    })?;
    Some(q)
}

fn read_event<'a>(r: &mut Reader<'a>) -> Option<Event<'a>> {
    let mut e = Event::default();
    r.object(|r, key| {
        Some(match key {
            b"schema_version" => {
                e.schema_version = Some(r.int()?);
                1
            }
            b"event_id" => {
                e.event_id = Some(r.string()?);
                2
            }
            b"ts" => {
                e.ts = Some(r.string()?);
                4
            }
            b"tenant_id" => {
                e.tenant_id = Some(r.string()?);
                8
            }
            b"account_id" => {
                e.account_id = Some(r.string()?);
                16
            }
            b"request" => {
                e.request = Some(read_request(r)?);
                32
            }
            b"response" => {
                e.response = Some(read_response(r)?);
                64
            }
            b"prompt" => {
                e.prompt = r.nullable(read_prompt)?;
                128
            }
            b"client" => {
                e.client = r.nullable(read_client)?;
                256
            }
            b"account" => {
                e.account = r.nullable(read_account)?;
                512
            }
            _ => {
                r.skip_value(0)?;
                0 // a field the contract does not know: ignored, as pydantic does
            }
        })
    })?;
    Some(e)
}

// Timestamps --------------------------------------------------------------------------

fn two_digits(b: &[u8], at: usize) -> Option<i64> {
    let (hi, lo) = (b[at], b[at + 1]);
    if hi.is_ascii_digit() && lo.is_ascii_digit() {
        Some(i64::from(hi - b'0') * 10 + i64::from(lo - b'0'))
    } else {
        None
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Microseconds since the Unix epoch that an RFC 3339 `date-time` names, as
/// `schemas.fields.parse_rfc3339(text).timestamp()` reads it; None where that function
/// refuses `text`, and also where the result could differ from its float (beyond
/// 2^53 microseconds: about the years 1685 to 2255).
///
/// The form (`schemas.fields._RFC3339`): `\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}`, an
/// optional fraction `\.\d+` (digits past the sixth dropped, as `fromisoformat` drops
/// them), then `[Zz]` or `[+-]\d{2}:\d{2}`.
fn rfc3339_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = two_digits(b, 0)? * 100 + two_digits(b, 2)?;
    let (month, day) = (two_digits(b, 5)?, two_digits(b, 8)?);
    let (hour, minute, second) = (two_digits(b, 11)?, two_digits(b, 14)?, two_digits(b, 17)?);
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut fraction_us = 0;
    if b[at] == b'.' {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            if at - start < 6 {
                fraction_us = fraction_us * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        let digits = at - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..6 {
            fraction_us *= 10;
        }
    }
    let offset_s = match &b[at..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (two_digits(b, at + 1)?, two_digits(b, at + 4)?);
            // Refused by fromisoformat (24 hours or more) or read in ways not checked here.
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let local_s = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let micros = (local_s - offset_s) * 1_000_000 + fraction_us;
    if micros.unsigned_abs() >= 1 << 53 {
        return None;
    }
    Some(micros)
}

/// The float `datetime.timestamp()` gives for whole microseconds since the epoch: their
/// quotient by 10^6, correctly rounded (both are exact doubles below 2^53).
fn seconds(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

// Field checks of schemas.event ----------------------------------------------------------

/// An `Id`: 1 to 128 characters (code points, as pydantic counts them).
fn is_id(text: &str) -> bool {
    !text.is_empty() && (text.len() <= 128 || text.chars().count() <= 128)
}

/// `^[0-9a-fA-F]{16}$` as a 64-bit number.
fn simhash(text: &str) -> Option<u64> {
    if text.len() != 16 || !text.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// `^[A-Z]{2}$`.
fn is_country(text: &str) -> bool {
    text.len() == 2 && text.bytes().all(|c| c.is_ascii_uppercase())
}

// msgpack, as msgspec writes it ------------------------------------------------------------

fn put_uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if v <= 0xFF {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= 0xFFFF {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xFFFF_FFFF {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn put_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        put_uint(out, v as u64);
    } else if v >= -32 {
        out.push(v as i8 as u8);
    } else if v >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, v as i8 as u8]);
    } else if v >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

pub(crate) fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.push(0xcb);
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(if v { 0xc3 } else { 0xc2 });
}

fn put_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

/// Writes a string; returns where its UTF-8 bytes start in `out`.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) -> usize {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xFF {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= 0xFFFF {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    let start = out.len();
    out.extend_from_slice(s.as_bytes());
    start
}

fn put_opt_str(out: &mut Vec<u8>, s: &Option<Cow<'_, str>>) {
    match s {
        Some(s) => {
            put_str(out, s);
        }
        None => put_nil(out),
    }
}

pub(crate) fn put_array_header(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= 0xFFFF {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

const API_CALL_FIELDS: usize = calls::FIELD_COUNT;

/// Where one valid event lies in a record's encoded calls: its `ApiCall` payload and,
/// inside it, the UTF-8 bytes of its tenant and account ids.
struct Encoded {
    ts: f64,
    partition: u32,
    payload: (usize, usize),
    tenant: (usize, usize),
    account: (usize, usize),
}

/// Appends the event to `out` as an `ApiCall` on the by-account topic, or gives None if
/// `schemas.event` would refuse it (or this module cannot tell).
fn encode_event(e: &Event<'_>, partitions: u32, out: &mut Vec<u8>) -> Option<Encoded> {
    let (event_id, tenant_id, account_id) =
        (e.event_id.as_deref()?, e.tenant_id.as_deref()?, e.account_id.as_deref()?);
    if e.schema_version? != 1 || !is_id(event_id) || !is_id(tenant_id) || !is_id(account_id) {
        return None;
    }
    let ts = seconds(rfc3339_micros(e.ts.as_deref()?)?);
    let (req, resp) = (e.request.as_ref()?, e.response.as_ref()?);
    let model = req.model.as_deref()?;
    let (status, input_tokens, output_tokens) =
        (resp.status?, resp.input_tokens?, resp.output_tokens?);
    if req.n < 1 || req.turn < 1 || !(100..=599).contains(&status) {
        return None;
    }
    if req.temperature.is_some_and(|t| t < 0.0) {
        return None;
    }
    let mut simhash_value = None;
    if let Some(p) = &e.prompt {
        if let Some(text) = &p.simhash {
            simhash_value = Some(simhash(text)?);
        }
        if p.jailbreak_score.is_some_and(|score| !(0.0..=1.0).contains(&score)) {
            return None;
        }
    }
    if let Some(c) = &e.client {
        if c.country.as_deref().is_some_and(|country| !is_country(country)) {
            return None;
        }
    }
    let mut created_at = None;
    if let Some(a) = &e.account {
        if let Some(text) = &a.created_at {
            created_at = Some(seconds(rfc3339_micros(text)?));
        }
    }

    let start = out.len();
    put_array_header(out, API_CALL_FIELDS);
    put_str(out, event_id);
    put_f64(out, ts);
    let tenant_at = put_str(out, tenant_id);
    let account_at = put_str(out, account_id);
    put_str(out, model);
    put_uint(out, status);
    put_uint(out, input_tokens);
    put_uint(out, output_tokens);
    put_opt_str(out, &req.endpoint);
    match req.max_tokens {
        Some(v) => put_uint(out, v),
        None => put_nil(out),
    }
    put_uint(out, req.n);
    put_bool(out, req.logprobs);
    put_uint(out, req.tool_count);
    put_uint(out, req.turn);
    put_opt_str(out, &resp.stop_reason);
    match &e.prompt {
        // has_prompt, simhash, topic, cot_request, jailbreak_score, sysprompt_probe
        None => out.extend_from_slice(&[0xc2, 0xc0, 0xc0, 0xc2, 0xc0, 0xc2]),
        Some(p) => {
            put_bool(out, true);
            match simhash_value {
                Some(v) => put_uint(out, v),
                None => put_nil(out),
            }
            put_opt_str(out, &p.topic);
            put_bool(out, p.cot_request);
            match p.jailbreak_score {
                Some(v) => put_f64(out, v),
                None => put_nil(out),
            }
            put_bool(out, p.sysprompt_probe);
        }
    }
    match &e.client {
        // has_client, ip, asn, user_agent, tls_fingerprint
        None => out.extend_from_slice(&[0xc2, 0xc0, 0xc0, 0xc0, 0xc0]),
        Some(c) => {
            put_bool(out, true);
            put_opt_str(out, &c.ip);
            match c.asn {
                Some(v) => put_int(out, v),
                None => put_nil(out),
            }
            put_opt_str(out, &c.user_agent);
            put_opt_str(out, &c.tls_fingerprint);
        }
    }
    match created_at {
        Some(v) => put_f64(out, v),
        None => put_nil(out),
    }
    match &e.account {
        Some(a) => put_opt_str(out, &a.payment_fingerprint),
        None => put_nil(out),
    }
    Some(Encoded {
        ts,
        partition: crc32fast::hash(account_id.as_bytes()) % partitions,
        payload: (start, out.len()),
        tenant: (tenant_at, tenant_at + tenant_id.len()),
        account: (account_at, account_at + account_id.len()),
    })
}

struct Limits {
    partitions: u32,
    max_message_bytes: usize,
    max_event_bytes: usize,
    max_batch_events: usize,
}

/// Every event of one record, encoded one after the other into `out`; None if the
/// Python edge must read the record.
fn encode_record(value: &[u8], limits: &Limits, out: &mut Vec<u8>) -> Option<Vec<Encoded>> {
    if value.is_empty() || value.len() > limits.max_message_bytes {
        return None;
    }
    let mut r = Reader { b: value, at: 0 };
    // `schemas.decode._ARRAY_START`: JSON whitespace, then `[`.
    let calls = if r.peek()? == b'[' {
        r.at += 1;
        let mut calls = Vec::new();
        if r.peek()? == b']' {
            r.at += 1;
        } else {
            loop {
                let event = read_event(&mut r)?;
                calls.push(encode_event(&event, limits.partitions, out)?);
                if calls.len() > limits.max_batch_events {
                    return None;
                }
                match r.peek()? {
                    b',' => r.at += 1,
                    b']' => {
                        r.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        calls
    } else {
        if value.len() > limits.max_event_bytes {
            return None;
        }
        let event = read_event(&mut r)?;
        vec![encode_event(&event, limits.partitions, out)?]
    };
    r.skip_ws();
    (r.at == value.len()).then_some(calls)
}

// Python ------------------------------------------------------------------------------

/// One valid call at the edge: what orders it (`ts`, `tenant_id`, `account_id`), where it
/// goes (`partition` of the by-account topic) and what is sent (`payload`: the msgpack of
/// its `ApiCall`). The calls of one record share one buffer.
#[pyclass(frozen, module = "distillwatch_native")]
struct EdgeCall {
    #[pyo3(get)]
    ts: f64,
    #[pyo3(get)]
    tenant_id: Py<PyString>,
    #[pyo3(get)]
    account_id: Py<PyString>,
    #[pyo3(get)]
    partition: u32,
    buffer: Arc<[u8]>,
    span: (usize, usize),
}

impl EdgeCall {
    fn bytes(&self) -> &[u8] {
        &self.buffer[self.span.0..self.span.1]
    }
}

#[pymethods]
impl EdgeCall {
    #[new]
    fn new(
        ts: f64,
        tenant_id: Py<PyString>,
        account_id: Py<PyString>,
        partition: u32,
        payload: &[u8],
    ) -> Self {
        EdgeCall { ts, tenant_id, account_id, partition, buffer: payload.into(), span: (0, payload.len()) }
    }

    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.bytes())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "EdgeCall(ts={:?}, tenant_id={}, account_id={}, partition={}, {} bytes)",
            self.ts,
            self.tenant_id.bind(py).repr().map_or_else(|_| "?".into(), |r| r.to_string()),
            self.account_id.bind(py).repr().map_or_else(|_| "?".into(), |r| r.to_string()),
            self.partition,
            self.span.1 - self.span.0
        )
    }
}

/// Reads `api-calls` records into `EdgeCall`s for `partitions` by-account partitions, within
/// the contract's size limits (those of `schemas.decode`).
#[pyclass(frozen, module = "distillwatch_native")]
struct EdgeDecoder {
    limits: Limits,
}

#[pymethods]
impl EdgeDecoder {
    #[new]
    fn new(
        partitions: u32,
        max_message_bytes: usize,
        max_event_bytes: usize,
        max_batch_events: usize,
    ) -> PyResult<Self> {
        if partitions == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err("partitions must be at least 1"));
        }
        Ok(EdgeDecoder {
            limits: Limits { partitions, max_message_bytes, max_event_bytes, max_batch_events },
        })
    }

    #[getter]
    fn partitions(&self) -> u32 {
        self.limits.partitions
    }

    /// The calls of one record in record order, or None when the Python edge must read
    /// it: something in it is invalid, or read by rules this decoder does not check.
    fn decode(&self, py: Python<'_>, value: &[u8]) -> Option<EdgeCalls> {
        let limits = &self.limits;
        py.allow_threads(|| encode_whole(value, limits).map(calls_of))
    }

    /// `decode` of each of `values` (bytes, or None: then None), parsed together without
    /// the GIL: from a thread of its own, one wait for the GIL for all of them.
    fn decode_many<'py>(&self, py: Python<'py>, values: &Bound<'py, PyList>) -> Vec<Option<EdgeCalls>> {
        let items: Vec<Bound<'py, PyAny>> = values.iter().collect();
        let slices: Vec<Option<&[u8]>> = items
            .iter()
            .map(|item| item.downcast::<PyBytes>().ok().map(|b| b.as_bytes()))
            .collect();
        let limits = &self.limits;
        py.allow_threads(|| {
            slices.iter().map(|value| value.and_then(|v| encode_whole(v, limits)).map(calls_of)).collect()
        })
    }
}

/// One record's events encoded, and the buffer their spans point into; None when the
/// Python edge must read it.
fn encode_whole(value: &[u8], limits: &Limits) -> Option<(Vec<Encoded>, Vec<u8>)> {
    let mut out = Vec::with_capacity(value.len() / 3);
    encode_record(value, limits, &mut out).map(|calls| (calls, out))
}

/// The calls of one record's encoded events, in record order.
fn calls_of((calls, out): (Vec<Encoded>, Vec<u8>)) -> EdgeCalls {
    let buffer: Arc<[u8]> = out.into();
    EdgeCalls::from_rows(
        calls
            .into_iter()
            .map(|e| Row {
                ts: e.ts,
                partition: e.partition,
                buffer: Arc::clone(&buffer),
                payload: e.payload,
                tenant: e.tenant,
                account: e.account,
            })
            .collect(),
    )
}

/// One internal record of calls from `EdgeCall`s: `tag` (`streams.internal.CALLS_TAG`),
/// then a msgpack array of their `ApiCall`s.
#[pyfunction]
fn encode_calls<'py>(
    py: Python<'py>,
    tag: &[u8],
    calls: &Bound<'py, PyList>,
) -> PyResult<Bound<'py, PyBytes>> {
    let calls: Vec<Bound<'py, EdgeCall>> =
        calls.iter().map(|item| item.downcast_into::<EdgeCall>()).collect::<Result<_, _>>()?;
    let payloads: Vec<&[u8]> = calls.iter().map(|call| call.get().bytes()).collect();
    Ok(PyBytes::new(py, &calls_record(tag, &payloads)))
}

/// One internal record of calls: `tag`, then a msgpack array of their `payloads` (each
/// the msgpack of an `ApiCall`).
pub(crate) fn calls_record(tag: &[u8], payloads: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tag.len() + 5 + payloads.iter().map(|p| p.len()).sum::<usize>());
    out.extend_from_slice(tag);
    put_array_header(&mut out, payloads.len());
    for payload in payloads {
        out.extend_from_slice(payload);
    }
    out
}

// The link observer's per-call step (`models.linking.observe.LinkObserver.observe`) -------
//
// The same arithmetic on the same per-account `array("I")` of 30 words, so snapshots are
// unchanged: see the Python module for what the words and the Bloom bits mean. Text that
// becomes part of a key or an id is made by Python's own `str()` of the field, so numbers
// print as Python prints them (`1` and `True`, `0.0` and `-0.0` differ).

const FIRST_SEEN: usize = 0;
const REFRESHED: usize = 1;
const SUSPICION: usize = 2;
const CALLS: usize = 3;
const RING_NEXT: usize = 4;
const RING: usize = 5;
const TEMPLATE_BANDS: usize = 4;
const RING_SLOTS: usize = 2 * TEMPLATE_BANDS;
const BLOOM: usize = RING + RING_SLOTS;
const BLOOM_WORDS: usize = 17;
const BLOOM_BITS: u64 = 32 * BLOOM_WORDS as u64;
const SLOTS: usize = BLOOM + BLOOM_WORDS;
const ONSET_ID: u64 = 0x5EED_0001;
const SIGNUP_SALT: i128 = 0x9E37_79B9;
const GOLDEN: u64 = 0x9E37_79B1;
const BAND_PAIRS: [(usize, usize); 6] = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)];

type BloomBits = (usize, u32, usize, u32);

fn bloom_bits(ident: u64) -> BloomBits {
    let low = ident % BLOOM_BITS;
    let high = (ident >> 11) % BLOOM_BITS;
    (BLOOM + (low >> 5) as usize, 1 << (low & 31), BLOOM + (high >> 5) as usize, 1 << (high & 31))
}

fn seen(state: &[std::cell::Cell<u32>], bits: BloomBits) -> bool {
    state[bits.0].get() & bits.1 != 0 && state[bits.2].get() & bits.3 != 0
}

fn remember(state: &[std::cell::Cell<u32>], bits: BloomBits) {
    state[bits.0].set(state[bits.0].get() | bits.1);
    state[bits.2].set(state[bits.2].get() | bits.3);
}

/// `_newly_remembered`: put `ident` in the registry; whether it was (probably) not there.
fn newly_remembered(state: &[std::cell::Cell<u32>], ident: u64) -> bool {
    let bits = bloom_bits(ident);
    if seen(state, bits) {
        return false;
    }
    remember(state, bits);
    true
}

fn crc(seed: u32, text: &str) -> u64 {
    let mut hasher = crc32fast::Hasher::new_with_initial(seed);
    hasher.update(text.as_bytes());
    u64::from(hasher.finalize())
}

/// Python's `float.__floordiv__` (Objects/floatobject.c, `_float_div_mod`), bit for bit.
fn py_floordiv(vx: f64, wx: f64) -> f64 {
    let m = vx % wx;
    let mut div = (vx - m) / wx;
    if m != 0.0 && (wx < 0.0) != (m < 0.0) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut floordiv = div.floor();
        if div - floordiv > 0.5 {
            floordiv += 1.0;
        }
        floordiv
    } else {
        (0.0f64).copysign(vx / wx)
    }
}

/// `models.linking.keys.bucket`: `int(ts // bucket_s)`, exact for any float below 2^127.
pub(crate) fn bucket(ts: f64, bucket_s: f64) -> PyResult<i128> {
    let q = py_floordiv(ts, bucket_s);
    if !q.is_finite() || q.abs() >= 1.7e38 {
        return Err(pyo3::exceptions::PyOverflowError::new_err("bucket out of range"));
    }
    Ok(q as i128)
}

/// An int field of a call: through a machine word when it fits one, as nearly all do
/// (PyO3's 128-bit extraction alone made counting slower than the Python it replaced).
pub(crate) fn int(value: &Bound<'_, PyAny>) -> PyResult<i128> {
    match value.extract::<i64>() {
        Ok(v) => Ok(i128::from(v)),
        Err(_) => value.extract::<i128>(),
    }
}

/// `models.linking.keys.ip_prefix`.
fn ip_prefix(ip: &str) -> String {
    if ip.contains('/') {
        return ip.to_owned();
    }
    if ip.contains(':') {
        let head: Vec<&str> =
            ip.split(':').take(3).map(|group| if group.is_empty() { "0" } else { group }).collect();
        return head.join(":") + "::/48";
    }
    let octets: Vec<&str> = ip.split('.').collect();
    if octets.len() == 4 {
        return format!("{}.{}.{}.0/24", octets[0], octets[1], octets[2]);
    }
    ip.to_owned()
}

/// What identifies a call's identity in the memo: its text fields, and its numbers where
/// they are exactly an int and a float (others are not memoised, as their text is not a
/// function of their value alone).
#[derive(PartialEq, Eq, Clone)]
struct IdentityKey {
    payment: Option<Box<str>>,
    tls: Option<Box<str>>,
    ip: Option<Box<str>>,
    asn: Option<i64>,
    user_agent: Option<Box<str>>,
    created_at: Option<u64>,
}

/// An identity borrowed from a call's fields: the memo is probed without copying its
/// text (four strings a call, allocated and freed, were a twentieth of the link stage).
struct IdentityRef<'a> {
    payment: Option<&'a str>,
    tls: Option<&'a str>,
    ip: Option<&'a str>,
    asn: Option<i64>,
    user_agent: Option<&'a str>,
    created_at: Option<u64>,
}

impl IdentityRef<'_> {
    fn owned(&self) -> IdentityKey {
        IdentityKey {
            payment: self.payment.map(Box::from),
            tls: self.tls.map(Box::from),
            ip: self.ip.map(Box::from),
            asn: self.asn,
            user_agent: self.user_agent.map(Box::from),
            created_at: self.created_at,
        }
    }

    fn hash_into<H: std::hash::Hasher>(&self, state: &mut H) {
        use std::hash::Hash;
        self.payment.hash(state);
        self.tls.hash(state);
        self.ip.hash(state);
        self.asn.hash(state);
        self.user_agent.hash(state);
        self.created_at.hash(state);
    }
}

impl IdentityKey {
    fn borrowed(&self) -> IdentityRef<'_> {
        IdentityRef {
            payment: self.payment.as_deref(),
            tls: self.tls.as_deref(),
            ip: self.ip.as_deref(),
            asn: self.asn,
            user_agent: self.user_agent.as_deref(),
            created_at: self.created_at,
        }
    }
}

impl std::hash::Hash for IdentityKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.borrowed().hash_into(state);
    }
}

impl std::hash::Hash for IdentityRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.hash_into(state);
    }
}

impl hashbrown::Equivalent<IdentityKey> for IdentityRef<'_> {
    fn equivalent(&self, key: &IdentityKey) -> bool {
        self.payment == key.payment.as_deref()
            && self.tls == key.tls.as_deref()
            && self.ip == key.ip.as_deref()
            && self.asn == key.asn
            && self.user_agent == key.user_agent.as_deref()
            && self.created_at == key.created_at
    }
}

/// A text field as the memo keys it: None for None; not memoised (the outer None) unless
/// it is exactly a `str` of valid UTF-8.
fn text_field<'a>(value: &'a Bound<'_, PyAny>) -> Option<Option<&'a str>> {
    if value.is_none() {
        return Some(None);
    }
    let text = value.downcast_exact::<PyString>().ok()?;
    text.to_str().ok().map(Some)
}

fn identity_key<'a>(fields: &'a [Bound<'_, PyAny>; 6]) -> Option<IdentityRef<'a>> {
    let [payment, tls, ip, asn, user_agent, created_at] = fields;
    let asn = if asn.is_none() {
        None
    } else {
        let number = asn.downcast_exact::<pyo3::types::PyInt>().ok()?;
        Some(number.extract::<i64>().ok()?)
    };
    let created_at = if created_at.is_none() {
        None
    } else {
        let number = created_at.downcast_exact::<pyo3::types::PyFloat>().ok()?;
        Some(number.value().to_bits())
    };
    Some(IdentityRef {
        payment: text_field(payment)?,
        tls: text_field(tls)?,
        ip: text_field(ip)?,
        asn,
        user_agent: text_field(user_agent)?,
        created_at,
    })
}

/// The observer's configuration and its memo of identities; the per-account arrays stay
/// in the Python observer's dict.
#[pyclass(module = "distillwatch_native")]
struct ObserverCore {
    refresh_s: f64,
    step_q: i64,
    template_calls: i64,
    signup_bucket_s: f64,
    onset_bucket_s: f64,
    blank: Py<PyAny>,
    observation: Py<PyAny>,
    identities: hashbrown::HashMap<IdentityKey, BloomBits>,
    identities_max: usize,
}

#[pymethods]
impl ObserverCore {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        refresh_s: f64,
        step_q: i64,
        template_calls: i64,
        signup_bucket_s: f64,
        onset_bucket_s: f64,
        blank: Py<PyAny>,
        observation: Py<PyAny>,
        identities_max: usize,
    ) -> Self {
        ObserverCore {
            refresh_s,
            step_q,
            template_calls,
            signup_bucket_s,
            onset_bucket_s,
            blank,
            observation,
            identities: hashbrown::HashMap::default(),
            identities_max,
        }
    }

    /// `LinkObserver.observe(call, suspicion)` with the observer's account arrays.
    fn observe<'py>(
        &mut self,
        py: Python<'py>,
        accounts: &Bound<'py, pyo3::types::PyDict>,
        call: &Bound<'py, PyAny>,
        suspicion: f64,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        self.observe_into(py, accounts, call, suspicion, &mut Observations::Objects(&out))?;
        Ok(out)
    }

    /// The link stage of a drain's calls, in order, in one call: for each, the share
    /// suspicion's update (`share` on `share_accounts`), the larger of it and the engine's
    /// suspicion after the call (`engine_suspicions`, one per call), and the observations
    /// the call causes with that, into `out`: appended to it as `LinkObservation`s if it
    /// is a list, encoded into their partitions' records if it is `ObservationRecords`.
    /// Returns how many calls were done and the exception raised by the next one (None
    /// when all were done): the caller dead-letters that call and goes on with those
    /// after it.
    #[allow(clippy::too_many_arguments)]
    fn observe_many<'py>(
        &mut self,
        py: Python<'py>,
        accounts: &Bound<'py, pyo3::types::PyDict>,
        share: &Bound<'py, share::ShareCore>,
        share_accounts: &Bound<'py, pyo3::types::PyDict>,
        calls: &Bound<'py, PyList>,
        engine_suspicions: Vec<f64>,
        out: &Bound<'py, PyAny>,
    ) -> PyResult<(usize, Option<PyObject>)> {
        if engine_suspicions.len() != calls.len() {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "{} calls but {} suspicions",
                calls.len(),
                engine_suspicions.len()
            )));
        }
        let share = share.get();
        let mut records;
        let mut out = if let Ok(list) = out.downcast::<PyList>() {
            Observations::Objects(list)
        } else {
            records = out.downcast::<observations::ObservationRecords>()?.borrow_mut();
            Observations::Records(&mut records)
        };
        for (done, (call, engine)) in calls.iter().zip(engine_suspicions).enumerate() {
            let step = share
                .update_one(py, share_accounts, &call)
                .and_then(|own| self.observe_into(py, accounts, &call, own.max(engine), &mut out));
            if let Err(err) = step {
                return Ok((done, Some(err.into_value(py).into_any())));
            }
        }
        Ok((calls.len(), None))
    }
}

/// Where the observer's observations go: `LinkObservation`s appended to a list, or
/// encoded into the records of their partitions.
enum Observations<'a, 'py> {
    Objects(&'a Bound<'py, PyList>),
    Records(&'a mut observations::ObservationRecords),
}

impl ObserverCore {
    /// `observe`, appending the observations to `out`.
    fn observe_into<'py>(
        &mut self,
        py: Python<'py>,
        accounts: &Bound<'py, pyo3::types::PyDict>,
        call: &Bound<'py, PyAny>,
        suspicion: f64,
        out: &mut Observations<'_, 'py>,
    ) -> PyResult<()> {
        use pyo3::intern;
        let ts_obj = field(call, f::TS)?;
        let ts: f64 = ts_obj.extract()?;
        if !ts.is_finite() {
            return Err(pyo3::exceptions::PyValueError::new_err("event time is not finite"));
        }
        let whole = ts.trunc();
        let scaled = suspicion * 1000.0;
        if !scaled.is_finite() {
            return Err(pyo3::exceptions::PyValueError::new_err("suspicion is not finite"));
        }
        let quantised = (scaled.round_ties_even() as i64).clamp(0, 1000);
        let word = |value: f64| -> PyResult<u32> {
            if (0.0..4_294_967_296.0).contains(&value) {
                Ok(value as u32)
            } else {
                Err(pyo3::exceptions::PyOverflowError::new_err(
                    "unsigned int is out of range for the account's state",
                ))
            }
        };
        let account_id = field(call, f::ACCOUNT_ID)?;
        let state_obj = match accounts.get_item(&account_id)? {
            Some(state) => state,
            None => {
                let state = self.blank.bind(py).call_method0(intern!(py, "__copy__"))?;
                {
                    let state = Cells::<u32>::of(&state, "an account state")?;
                    let words = state.cells();
                    words[FIRST_SEEN].set(word(whole)?);
                    words[REFRESHED].set(word(whole)?);
                    words[SUSPICION].set(quantised as u32);
                }
                accounts.set_item(&account_id, &state)?;
                state
            }
        };
        let cells = Cells::<u32>::of(&state_obj, "an account state")?;
        let state = cells.exactly(SLOTS, "an account state of another size")?;
        let quantised_u = quantised as u32;
        let since_refresh = whole - f64::from(state[REFRESHED].get());
        if since_refresh >= self.refresh_s
            || (quantised - i64::from(state[SUSPICION].get())).abs() >= self.step_q
        {
            for w in &state[BLOOM..SLOTS] {
                w.set(0);
            }
            state[REFRESHED].set(word(whole)?);
            state[SUSPICION].set(quantised_u);
            state[CALLS].set(0);
        }
        let calls = state[CALLS].get();
        if calls < 0xFFFF {
            state[CALLS].set(calls + 1);
        }
        let mut found: Vec<(&'static str, String)> = Vec::new();

        let fields = [
            field(call, f::PAYMENT_FINGERPRINT)?,
            field(call, f::TLS_FINGERPRINT)?,
            field(call, f::IP)?,
            field(call, f::ASN)?,
            field(call, f::USER_AGENT)?,
            field(call, f::CREATED_AT)?,
        ];
        let key = identity_key(&fields);
        let memoised = key.as_ref().and_then(|k| self.identities.get(k)).copied();
        let identity = match memoised {
            Some(bits) => bits,
            None => {
                let mut text = String::new();
                for (n, field) in fields.iter().enumerate() {
                    if n > 0 {
                        text.push('|');
                    }
                    text.push_str(field.str()?.to_str()?);
                }
                let bits = bloom_bits(crc(4, &text));
                if let Some(k) = key {
                    if self.identities.len() >= self.identities_max {
                        self.identities.clear();
                    }
                    self.identities.insert(k.owned(), bits);
                }
                bits
            }
        };
        if !seen(state, identity) {
            remember(state, identity);
            self.new_identity_keys(state, &fields, &mut found)?;
        }

        let simhash_obj = field(call, f::SIMHASH)?;
        if !simhash_obj.is_none() {
            let simhash: u64 = simhash_obj.extract()?;
            let band = |b: usize| (simhash >> (16 * b)) & 0xFFFF;
            let values: [u32; 4] =
                std::array::from_fn(|b| (((b as u64) << 16 | band(b)) + 1) as u32);
            let mut mask = 0usize;
            if i64::from(calls) < self.template_calls {
                mask = 0b1111;
            } else {
                for (b, value) in values.iter().enumerate() {
                    if *value == state[RING + b].get()
                        || *value == state[RING + TEMPLATE_BANDS + b].get()
                    {
                        mask |= 1 << b;
                    }
                }
            }
            for (first, second) in BAND_PAIRS {
                if mask >> first & 1 == 0 || mask >> second & 1 == 0 {
                    continue;
                }
                let ident = ((band(first) << 16) | band(second))
                    .wrapping_mul(GOLDEN)
                    .wrapping_add((first * 4 + second) as u64);
                let bits = bloom_bits(ident & 0xFFFF_FFFF);
                if !seen(state, bits) {
                    remember(state, bits);
                    found.push((
                        "template",
                        format!("p{first}{second}:{:04x}{:04x}", band(first), band(second)),
                    ));
                }
            }
            let ring = RING + state[RING_NEXT].get() as usize;
            for (b, value) in values.iter().enumerate() {
                state[ring + b].set(*value);
            }
            state[RING_NEXT].set(((ring - RING + TEMPLATE_BANDS) % RING_SLOTS) as u32);
        }

        if found.is_empty() {
            return Ok(());
        }
        let tenant_id = field(call, f::TENANT_ID)?;
        let reported = quantised as f64 / 1000.0;
        let first_seen = f64::from(state[FIRST_SEEN].get());
        drop(cells);
        match out {
            Observations::Objects(out) => {
                let observation = self.observation.bind(py);
                for (kind, key) in found {
                    out.append(observation.call1((
                        kind,
                        key,
                        &tenant_id,
                        &account_id,
                        &ts_obj,
                        reported,
                        first_seen,
                    ))?)?;
                }
            }
            Observations::Records(records) => {
                let (tenant_id, account_id) =
                    (tenant_id.downcast::<PyString>()?.to_str()?, account_id.downcast::<PyString>()?.to_str()?);
                for (kind, key) in &found {
                    records.push(&observations::Observation {
                        kind,
                        key,
                        tenant_id,
                        account_id,
                        ts,
                        suspicion: reported,
                        first_seen,
                    });
                }
            }
        }
        Ok(())
    }

    /// `LinkObserver._new_identity_keys`.
    fn new_identity_keys(
        &self,
        state: &[std::cell::Cell<u32>],
        fields: &[Bound<'_, PyAny>; 6],
        found: &mut Vec<(&'static str, String)>,
    ) -> PyResult<()> {
        let [payment, tls, ip, asn, user_agent, created_at] = fields;
        if newly_remembered(state, ONSET_ID) {
            let first_seen = f64::from(state[FIRST_SEEN].get());
            found.push(("onset", bucket(first_seen, self.onset_bucket_s)?.to_string()));
        }
        if payment.is_truthy()? {
            let text = payment.str()?;
            let text = text.to_str()?;
            if newly_remembered(state, crc(1, text)) {
                found.push(("payment", text.to_owned()));
            }
        }
        if tls.is_truthy()? {
            let text = tls.str()?;
            let text = text.to_str()?;
            if newly_remembered(state, crc(2, text)) {
                found.push(("tls", text.to_owned()));
            }
        }
        if ip.is_truthy()? && !asn.is_none() && user_agent.is_truthy()? {
            let key = format!(
                "{}|{}|{}",
                ip_prefix(ip.str()?.to_str()?),
                asn.str()?.to_str()?,
                user_agent.str()?.to_str()?
            );
            if newly_remembered(state, crc(3, &key)) {
                found.push(("netua", key));
            }
        }
        if !created_at.is_none() {
            let signup = bucket(created_at.extract()?, self.signup_bucket_s)?;
            let ident = (signup.wrapping_mul(i128::from(GOLDEN)).wrapping_add(SIGNUP_SALT)
                & 0xFFFF_FFFF) as u64;
            if newly_remembered(state, ident) {
                found.push(("signup", signup.to_string()));
            }
        }
        Ok(())
    }
}


#[pymodule]
fn distillwatch_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ObserverCore>()?;
    m.add_class::<observations::ObservationRecords>()?;
    m.add_class::<behaviour::BehaviourCore>()?;
    m.add_class::<minutes::MinuteCounts>()?;
    m.add_class::<share::ShareCore>()?;
    m.add_class::<evidence::EvidenceCore>()?;
    m.add_class::<EdgeCall>()?;
    m.add_class::<order::CallBuffer>()?;
    m.add_class::<order::EdgeBuffer>()?;
    m.add_class::<edge_calls::EdgeCalls>()?;
    m.add_class::<EdgeDecoder>()?;
    m.add_class::<calls::CallDecoder>()?;
    m.add_function(wrap_pyfunction!(encode_calls, m)?)?;
    m.add_function(wrap_pyfunction!(fields::register_call_type, m)?)?;
    m.add_function(wrap_pyfunction!(fields::register_state_types, m)?)?;
    Ok(())
}
