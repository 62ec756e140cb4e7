//! The streaming XML reader under every response parser, with the limits it enforces and the
//! errors it reports.
//!
//! An answer is read once through quick-xml's namespace-aware reader; no tree is built, so a
//! revision list of a million entries costs its result and little more. `Reader` turns the
//! reader's events into open / text / close steps and is the one place where the answer's
//! limits and refusals live:
//! - size is checked before parsing, and the answer must be UTF-8 (a declared other encoding
//!   is refused);
//! - a DOCTYPE is refused outright, so no entity can expand ("billion laughs") or point outside
//!   the answer; only the five predefined entities and character references are resolved;
//! - nesting depth, the length of each value and the number of entries of each list are bounded
//!   (see [`Limits`]);
//! - an answer that stops early is reported as truncated, not as a generic syntax error.
//!
//! Elements are told apart by namespace URI and local name, never by prefix: WSUS writes
//! `soap:`, other .NET services `s:`, and the operation's elements use a default namespace.

use std::borrow::Cow;
use std::fmt;

use quick_xml::NsReader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};

use crate::fault::SoapFault;
use crate::service::{DSS_AUTH_NAMESPACE, SERVER_SYNC_NAMESPACE};

/// The SOAP 1.1 envelope namespace: the only SOAP version this crate speaks. SOAP 1.2 is a
/// configuration both ends must share, never negotiated, and no upstream is known to use it.
pub const SOAP_ENVELOPE_NAMESPACE: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// Bounds on what one answer may cost. The defaults accept every answer recorded or reported
/// with a wide margin; [`Limits::default`] explains each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest answer body, checked before parsing. A WSUS list of 24,509 revisions is 3.1 MB;
    /// Microsoft Update's full list is larger by an unknown factor, and GetRevisionIdList has
    /// no paging, so the default (256 MiB) is generous. The HTTP client should stop reading a
    /// body at this size rather than buffer more.
    pub max_response_bytes: usize,
    /// Deepest element nesting, the envelope being depth 1. Real answers nest 7 deep.
    pub max_depth: usize,
    /// Most entries in any one list of an answer (revisions, updates, file URLs, languages,
    /// digests). The default (4,000,000) is far above any catalog's revision count; the answer
    /// size bounds the rest.
    pub max_list_items: usize,
    /// Longest ordinary value (an anchor, a cookie, a URL), in bytes after unescaping.
    pub max_text_bytes: usize,
    /// Largest update document, in bytes of UTF-8: a plain `XmlUpdateBlob` and a decoded
    /// compressed one. The compressed blob's Cabinet may declare a member of at most twice this
    /// (UTF-16 takes two bytes for each ASCII character). The default is the project's own
    /// document limit, so a document accepted here is not refused by `parse_update` for size.
    pub max_document_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_response_bytes: 256 << 20,
            max_depth: 32,
            max_list_items: 4_000_000,
            max_text_bytes: 64 << 10,
            max_document_bytes: sitesync_metadata::ParseLimits::default().max_document_bytes,
        }
    }
}

impl Limits {
    /// Largest Cabinet a compressed blob may be or declare: the member at its largest plus
    /// room for the Cabinet's and LZX's framing (LZX stores incompressible data in verbatim
    /// blocks, so a Cabinet is never much larger than its member).
    pub fn max_cabinet_bytes(&self) -> usize {
        let member = self.max_member_bytes();
        member.saturating_add(member / 16).saturating_add(4 << 10)
    }

    /// Largest UTF-16 member a compressed blob's Cabinet may declare.
    pub fn max_member_bytes(&self) -> usize {
        self.max_document_bytes.saturating_mul(2)
    }

    /// Longest `XmlUpdateBlobCompressed` text: the base64 of the largest Cabinet.
    pub(crate) fn max_compressed_text_bytes(&self) -> usize {
        self.max_cabinet_bytes().div_ceil(3).saturating_mul(4)
    }
}

/// Why an answer was refused. Messages name the element concerned (its path from the envelope)
/// and, where it helps, the byte offset, so an operator can find the spot in a captured body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The upstream server answered with a SOAP fault: a protocol-level refusal with a reason
    /// the client can act on (see [`crate::FaultKind`]). Boxed: faults are rare and large.
    #[error("the upstream server answered with a fault: {0}")]
    Fault(Box<SoapFault>),

    #[error("the answer is empty")]
    Empty,

    #[error(
        "the answer is {size} bytes, more than the limit of {limit} bytes; raise the limit only \
         if the upstream server is genuine and its catalog that large"
    )]
    TooLarge { size: usize, limit: usize },

    #[error("the answer is not UTF-8: invalid byte sequence at byte {byte}")]
    NotUtf8 { byte: u64 },

    #[error("the answer declares encoding `{declared}`; only UTF-8 is accepted")]
    UnsupportedEncoding { declared: String },

    #[error("the answer is truncated at byte {byte}: {detail}; the connection may have dropped")]
    Truncated { byte: u64, detail: String },

    #[error("the answer is not well-formed XML at byte {byte}: {detail}")]
    Malformed { byte: u64, detail: String },

    #[error(
        "the answer has a DOCTYPE declaration at byte {byte}; SOAP forbids one, and it is refused \
         so that no entity can expand or point outside the answer"
    )]
    DoctypeRefused { byte: u64 },

    #[error(
        "unknown entity reference `&{entity};` at byte {byte}; only the five predefined XML \
         entities and character references are accepted"
    )]
    UnknownEntity { entity: String, byte: u64 },

    #[error("elements nest deeper than the limit of {limit} at `{at}` (byte {byte})")]
    TooDeep { limit: usize, at: String, byte: u64 },

    #[error("list `{at}` has more than the limit of {limit} entries")]
    TooManyItems { limit: usize, at: String },

    #[error("the value of `{at}` is longer than the limit of {limit} bytes")]
    ValueTooLong { limit: usize, at: String },

    #[error(
        "the answer is not a SOAP 1.1 envelope: its root element is {found}; expected \
         `Envelope` in namespace {SOAP_ENVELOPE_NAMESPACE}"
    )]
    NotSoap { found: String },

    #[error("the SOAP envelope has no `Body`")]
    NoBody,

    #[error("the answer holds {found} where `{expected}` was expected; is this the right service?")]
    UnexpectedAnswer {
        expected: &'static str,
        found: String,
    },

    #[error("element `{at}` must contain only text, but it contains an element")]
    MixedContent { at: String },

    #[error("required element `{element}` is missing from `{at}`")]
    MissingElement { element: &'static str, at: String },

    #[error("element `{at}` appears more than once; the answer is ambiguous")]
    DuplicateElement { at: String },

    #[error("element `{at}` is `{value}`, which is not {expected}")]
    InvalidValue {
        at: String,
        value: String,
        expected: &'static str,
    },

    #[error(
        "update `{at}` carries {found}; exactly one of `XmlUpdateBlob` and \
         `XmlUpdateBlobCompressed` is expected"
    )]
    BlobCount { at: String, found: &'static str },
}

/// The namespace of an element, reduced to what the parsers distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ns {
    Soap,
    ServerSync,
    DssAuth,
    /// No namespace: SOAP 1.1 fault children and the fault detail are unqualified.
    None,
    Other,
}

/// An element whose start tag has just been read.
#[derive(Debug)]
pub(crate) struct Element<'i> {
    pub(crate) ns: Ns,
    /// The local name, borrowed from the answer.
    pub(crate) local: &'i str,
    /// Nesting depth, the envelope being 1; with the reader's open elements it gives the path.
    depth: usize,
    pub(crate) byte: u64,
}

/// One step through the answer.
pub(crate) enum Node<'i> {
    /// A start tag; an empty-element tag is an `Open` followed by a `Close`.
    Open(Element<'i>),
    /// Character data, CDATA or a resolved reference, inside the envelope.
    Text(Cow<'i, str>),
    /// The end tag of the innermost open element.
    Close,
    /// The end of input, after the envelope was closed.
    End,
}

/// The quick-xml reader plus everything needed to enforce the limits and locate errors.
pub(crate) struct Reader<'i, 'l> {
    reader: NsReader<&'i [u8]>,
    /// The whole answer: names are handed out as slices of it.
    text: &'i str,
    pub(crate) limits: &'l Limits,
    /// Local names of the open elements, envelope first.
    open: Vec<&'i str>,
    seen_root: bool,
    root_closed: bool,
    /// An empty-element tag was just handed out as `Open`; its `Close` comes next.
    pending_close: bool,
    /// Whether anything but an XML declaration has been read.
    started: bool,
}

impl<'i, 'l> Reader<'i, 'l> {
    /// Checks the answer's size and encoding and prepares to read it.
    pub(crate) fn new(body: &'i [u8], limits: &'l Limits) -> Result<Self, ResponseError> {
        if body.len() > limits.max_response_bytes {
            return Err(ResponseError::TooLarge {
                size: body.len(),
                limit: limits.max_response_bytes,
            });
        }
        // .NET may write a byte-order mark; it is not part of the XML.
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ResponseError::Empty);
        }
        let text = std::str::from_utf8(body).map_err(|e| match e.error_len() {
            None => ResponseError::Truncated {
                byte: e.valid_up_to() as u64,
                detail: "it ends inside a multi-byte UTF-8 character".to_owned(),
            },
            Some(_) => ResponseError::NotUtf8 {
                byte: e.valid_up_to() as u64,
            },
        })?;
        let mut reader = NsReader::from_str(text);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        Ok(Self {
            reader,
            text,
            limits,
            open: Vec::new(),
            seen_root: false,
            root_closed: false,
            pending_close: false,
            started: false,
        })
    }

    /// The next step. Every limit and well-formedness rule is enforced here.
    pub(crate) fn next(&mut self) -> Result<Node<'i>, ResponseError> {
        if self.pending_close {
            self.pending_close = false;
            return Ok(self.close());
        }
        loop {
            let byte = self.reader.buffer_position();
            let (ns, event) = match self.reader.read_resolved_event() {
                Ok((resolved, event)) => (classify(resolved), event),
                Err(error) => return Err(self.reader_error(error)),
            };
            if !matches!(event, Event::Decl(_)) {
                self.started = true;
            }
            match event {
                Event::Start(start) => return self.open_element(ns, &start, byte).map(Node::Open),
                Event::Empty(start) => {
                    let element = self.open_element(ns, &start, byte)?;
                    self.pending_close = true;
                    return Ok(Node::Open(element));
                }
                Event::End(_) => return Ok(self.close()),
                Event::Text(text) => {
                    let text = text.xml10_content().map_err(|e| malformed(byte, e))?;
                    if self.open.is_empty() {
                        if !text.trim_ascii().is_empty() {
                            return Err(malformed(byte, "text outside the envelope"));
                        }
                        continue;
                    }
                    return Ok(Node::Text(text));
                }
                Event::CData(data) => {
                    if self.open.is_empty() {
                        return Err(malformed(byte, "CDATA outside the envelope"));
                    }
                    let text = data.xml10_content().map_err(|e| malformed(byte, e))?;
                    return Ok(Node::Text(text));
                }
                Event::GeneralRef(reference) => {
                    if self.open.is_empty() {
                        return Err(malformed(byte, "entity reference outside the envelope"));
                    }
                    if let Some(ch) = reference
                        .resolve_char_ref()
                        .map_err(|e| malformed(byte, e))?
                    {
                        return Ok(Node::Text(Cow::Owned(ch.to_string())));
                    }
                    let name = reference.decode().map_err(|e| malformed(byte, e))?;
                    return match resolve_predefined_entity(&name) {
                        Some(value) => Ok(Node::Text(Cow::Borrowed(value))),
                        None => Err(ResponseError::UnknownEntity {
                            entity: excerpt(&name),
                            byte,
                        }),
                    };
                }
                Event::Comment(_) | Event::PI(_) => {}
                Event::Decl(decl) => {
                    if self.started {
                        return Err(malformed(byte, "XML declaration after the start"));
                    }
                    self.started = true;
                    if let Some(encoding) = decl.encoding() {
                        let encoding = encoding.map_err(|e| malformed(byte, e))?;
                        if !encoding.eq_ignore_ascii_case(b"utf-8") {
                            return Err(ResponseError::UnsupportedEncoding {
                                declared: excerpt(&String::from_utf8_lossy(&encoding)),
                            });
                        }
                    }
                }
                Event::DocType(_) => return Err(ResponseError::DoctypeRefused { byte }),
                Event::Eof => {
                    if let Some(innermost) = self.open.last() {
                        return Err(ResponseError::Truncated {
                            byte,
                            detail: format!(
                                "it ends inside element `{}` (open: `{}`)",
                                excerpt(innermost),
                                self.path()
                            ),
                        });
                    }
                    if !self.seen_root {
                        return Err(ResponseError::Truncated {
                            byte,
                            detail: "it ends before the envelope".to_owned(),
                        });
                    }
                    return Ok(Node::End);
                }
            }
        }
    }

    fn close(&mut self) -> Node<'i> {
        self.open.pop();
        if self.open.is_empty() {
            self.root_closed = true;
        }
        Node::Close
    }

    fn open_element(
        &mut self,
        ns: Result<Ns, String>,
        start: &BytesStart<'_>,
        byte: u64,
    ) -> Result<Element<'i>, ResponseError> {
        if self.root_closed {
            return Err(malformed(byte, "a second root element after the envelope"));
        }
        self.seen_root = true;
        let local = self.in_answer(start.local_name().into_inner(), byte)?;
        let depth = self.open.len() + 1;
        if depth > self.limits.max_depth {
            return Err(ResponseError::TooDeep {
                limit: self.limits.max_depth,
                at: join_path(&self.open, local),
                byte,
            });
        }
        let ns = ns.map_err(|prefix| {
            malformed(
                byte,
                format!("element `{local}` uses undeclared namespace prefix `{prefix}`"),
            )
        })?;
        self.open.push(local);
        Ok(Element {
            ns,
            local,
            depth,
            byte,
        })
    }

    /// `part` of an event as the slice of the answer it is. The reader borrows every event from
    /// the answer, so this always succeeds; should it ever hand out a copy, the answer is
    /// refused rather than the parser panicking.
    fn in_answer(&self, part: &[u8], byte: u64) -> Result<&'i str, ResponseError> {
        let text = self.text;
        (part.as_ptr() as usize)
            .checked_sub(text.as_ptr() as usize)
            .and_then(|start| text.get(start..start.checked_add(part.len())?))
            .ok_or_else(|| malformed(byte, "the XML reader returned text not in the answer"))
    }

    fn reader_error(&self, error: quick_xml::Error) -> ResponseError {
        use quick_xml::errors::{IllFormedError, SyntaxError};
        let byte = self.reader.error_position();
        match error {
            // Every syntax error but this one means "end of input inside a construct".
            quick_xml::Error::Syntax(syntax)
                if !matches!(syntax, SyntaxError::InvalidBangMarkup) =>
            {
                ResponseError::Truncated {
                    byte,
                    detail: syntax.to_string(),
                }
            }
            quick_xml::Error::IllFormed(IllFormedError::UnclosedReference) => {
                let rest = usize::try_from(byte)
                    .ok()
                    .and_then(|at| self.text.get(at..))
                    .unwrap_or_default();
                if rest.contains('<') {
                    malformed(byte, "`&` that does not start a reference")
                } else {
                    ResponseError::Truncated {
                        byte,
                        detail: IllFormedError::UnclosedReference.to_string(),
                    }
                }
            }
            other => malformed(byte, other),
        }
    }

    /// Reads up to the first element: the envelope.
    pub(crate) fn root(&mut self) -> Result<Element<'i>, ResponseError> {
        loop {
            match self.next()? {
                Node::Open(root) => return Ok(root),
                Node::Text(_) | Node::Close => {}
                Node::End => {
                    return Err(ResponseError::Truncated {
                        byte: self.reader.buffer_position(),
                        detail: "it ends before the envelope".to_owned(),
                    });
                }
            }
        }
    }

    /// Reads what follows the envelope: only comments, processing instructions and whitespace.
    pub(crate) fn finish(&mut self) -> Result<(), ResponseError> {
        loop {
            if let Node::End = self.next()? {
                return Ok(());
            }
        }
    }

    /// Calls `each` for every child element of the element just opened, up to its end tag.
    /// `each` must consume the child, end tag included (for instance with [`Reader::skip`]).
    /// Text between children is formatting and ignored.
    pub(crate) fn children(
        &mut self,
        mut each: impl FnMut(&mut Self, Element<'i>) -> Result<(), ResponseError>,
    ) -> Result<(), ResponseError> {
        loop {
            match self.next()? {
                Node::Open(child) => each(self, child)?,
                Node::Text(_) => {}
                Node::Close => return Ok(()),
                Node::End => return Err(self.ended_early()),
            }
        }
    }

    /// Consumes the element just opened, with everything in it (still checked and bounded).
    pub(crate) fn skip(&mut self) -> Result<(), ResponseError> {
        let mut depth = 1usize;
        loop {
            match self.next()? {
                Node::Open(_) => depth += 1,
                Node::Text(_) => {}
                Node::Close => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Node::End => return Err(self.ended_early()),
            }
        }
    }

    /// The text of the element just opened, up to its end tag, at most the ordinary limit.
    pub(crate) fn text(&mut self, element: &Element<'_>) -> Result<Cow<'i, str>, ResponseError> {
        self.text_within(element, self.limits.max_text_bytes)
    }

    /// The text of the element just opened, at most `limit` bytes.
    pub(crate) fn text_within(
        &mut self,
        element: &Element<'_>,
        limit: usize,
    ) -> Result<Cow<'i, str>, ResponseError> {
        let mut text = Cow::Borrowed("");
        loop {
            match self.next()? {
                Node::Text(part) => {
                    if text.len().saturating_add(part.len()) > limit {
                        return Err(ResponseError::ValueTooLong {
                            limit,
                            at: self.locate(element),
                        });
                    }
                    if text.is_empty() {
                        text = part;
                    } else {
                        text.to_mut().push_str(&part);
                    }
                }
                Node::Open(_) => {
                    return Err(ResponseError::MixedContent {
                        at: self.locate(element),
                    });
                }
                Node::Close => return Ok(text),
                Node::End => return Err(self.ended_early()),
            }
        }
    }

    /// The path of `element` from the envelope; `element` must be open or a child of an open
    /// element.
    pub(crate) fn locate(&self, element: &Element<'_>) -> String {
        let parents = element.depth.saturating_sub(1).min(self.open.len());
        join_path(&self.open[..parents], element.local)
    }

    /// The path of the innermost open element.
    fn path(&self) -> String {
        match self.open.split_last() {
            Some((last, parents)) => join_path(parents, last),
            None => String::new(),
        }
    }

    /// `next` reports end of input inside an element as truncation, so this is reached only if
    /// the reader is misused; it still must not panic.
    fn ended_early(&self) -> ResponseError {
        ResponseError::Truncated {
            byte: self.reader.buffer_position(),
            detail: "it ends inside an element".to_owned(),
        }
    }
}

/// Maps the reader's namespace resolution to [`Ns`], or the undeclared prefix.
fn classify(resolved: ResolveResult<'_>) -> Result<Ns, String> {
    match resolved {
        ResolveResult::Bound(Namespace(uri)) => Ok(match uri {
            _ if uri == SOAP_ENVELOPE_NAMESPACE.as_bytes() => Ns::Soap,
            _ if uri == SERVER_SYNC_NAMESPACE.as_bytes() => Ns::ServerSync,
            _ if uri == DSS_AUTH_NAMESPACE.as_bytes() => Ns::DssAuth,
            _ => Ns::Other,
        }),
        ResolveResult::Unbound => Ok(Ns::None),
        ResolveResult::Unknown(prefix) => Err(excerpt(&String::from_utf8_lossy(&prefix))),
    }
}

pub(crate) fn malformed(byte: u64, detail: impl fmt::Display) -> ResponseError {
    ResponseError::Malformed {
        byte,
        detail: detail.to_string(),
    }
}

fn join_path(parents: &[&str], last: &str) -> String {
    let mut path = String::new();
    for parent in parents {
        path.push_str(parent);
        path.push('/');
    }
    path.push_str(last);
    excerpt_with(&path, 240)
}

/// Input-derived text quoted in an error message, shortened so a hostile answer cannot flood
/// the logs.
pub(crate) fn excerpt(text: &str) -> String {
    excerpt_with(text, 80)
}

fn excerpt_with(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
