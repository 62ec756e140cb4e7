//! The update XML parser: one Microsoft Update metadata document in, one [`UpdateRevision`]
//! out, or a typed [`ParseError`] that says what is wrong and where.
//!
//! Approach. The document is streamed once through quick-xml's namespace-aware reader; no
//! tree is built. A small `Cursor` turns reader events into open / text / close steps and
//! enforces every limit and well-formedness rule in one place, so the recursive-descent
//! functions below it only see the shapes they expect: `UpdateIdentity`, `Properties`,
//! `LocalizedPropertiesCollection`, `Relationships`, `Files` and the category handler data.
//! Elements are matched by namespace URI and local name, never by prefix, because upstream
//! servers are free to choose prefixes. Everything else (applicability rules, installation
//! handlers, future additions) is skipped, yet still read, so it counts toward the limits
//! and must be well-formed.
//!
//! Limits and refusals, all checked while streaming (see [`ParseLimits`]):
//! - size is checked before any parsing; the input must be UTF-8 (it is what upstream
//!   servers send, and a declared non-UTF-8 encoding is refused);
//! - nesting depth, element count, attributes per element and the length of every kept
//!   value are bounded, so a hostile document costs at most linear time and small memory;
//! - a DOCTYPE is refused outright: update documents never carry one, and refusing it rules
//!   out entity expansion ("billion laughs") and external entities whatever the reader does;
//!   only the five predefined entities and character references are accepted;
//! - a document that ends early is reported as truncated, not as a generic syntax error.
//!
//! What is not checked: the full XML schema of update documents. Unknown elements and
//! attributes are accepted so that newer upstream documents still parse.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use quick_xml::NsReader;
use quick_xml::escape::{EscapeError, resolve_predefined_entity, unescape};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, QName, ResolveResult};

use crate::model::{
    CategoryType, DigestAlgorithm, FileDigest, LocalizedProperties, MsrcSeverity, PublicationState,
    Relationship, RevisionId, Timestamp, UpdateFile, UpdateId, UpdateRef, UpdateRevision,
    UpdateType,
};

/// The namespace of update documents and of every element this parser reads, except the
/// category information.
pub const UPDATE_NAMESPACE: &str = "http://schemas.microsoft.com/msus/2002/12/Update";

/// The namespace of `CategoryInformation`, the handler-specific data of category updates.
pub const CATEGORY_NAMESPACE: &str =
    "http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category";

/// Bounds on what one document may cost. The defaults accept every real update document we
/// know of with a wide margin; callers that re-parse documents they already accepted may
/// raise them (`..ParseLimits::default()` keeps the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest accepted document, checked before parsing so an oversized input costs nothing.
    pub max_document_bytes: usize,
    /// Deepest element nesting, the root being depth 1. Real documents nest about 10 deep
    /// (in applicability rules); the bound keeps the element stack small.
    pub max_depth: usize,
    /// Most elements in one document, skipped ones included: bounds the parsing time of a
    /// document made of many tiny elements.
    pub max_elements: usize,
    /// Most attributes (namespace declarations included) on one element: bounds the work of
    /// the duplicate-attribute check, which is quadratic in this number.
    pub max_attributes_per_element: usize,
    /// Longest attribute value or text value, in bytes after unescaping.
    pub max_text_bytes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_document_bytes: 4 << 20,
            max_depth: 64,
            max_elements: 250_000,
            max_attributes_per_element: 64,
            max_text_bytes: 256 << 10,
        }
    }
}

/// Where in a document a problem is: the element path from the root (local names, without
/// prefixes) and the byte offset of that element's start tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: String,
    pub byte: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` (byte {})", self.path, self.byte)
    }
}

/// Why a document was refused. Every message names the element or attribute concerned and,
/// where it helps, the byte offset, so an operator can find the spot in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the update document is empty")]
    Empty,

    #[error(
        "the update document is {size} bytes, more than the limit of {limit} bytes; \
         raise the parse limit only if the upstream document is genuine"
    )]
    TooLarge { size: usize, limit: usize },

    #[error("the update document is not UTF-8: invalid byte sequence at byte {byte}")]
    NotUtf8 { byte: u64 },

    #[error("the update document declares encoding `{declared}`; only UTF-8 is accepted")]
    UnsupportedEncoding { declared: String },

    #[error(
        "the update document is truncated at byte {byte}: {detail}; fetch it again from upstream"
    )]
    Truncated { byte: u64, detail: String },

    #[error("the update document is not well-formed XML at byte {byte}: {detail}")]
    Malformed { byte: u64, detail: String },

    #[error(
        "the update document has a DOCTYPE declaration at byte {byte}; update documents never \
         carry one, and it is refused so that no entity can expand or point outside the document"
    )]
    DoctypeRefused { byte: u64 },

    #[error(
        "unknown entity reference `&{entity};` at byte {byte}; only the five predefined XML \
         entities and character references are accepted"
    )]
    UnknownEntity { entity: String, byte: u64 },

    #[error("the root element is {found}; expected `Update` in namespace {UPDATE_NAMESPACE}")]
    NotAnUpdateDocument { found: String },

    #[error("elements nest deeper than the limit of {limit} at {at}")]
    TooDeep { limit: usize, at: Location },

    #[error("the update document has more than the limit of {limit} elements (at byte {byte})")]
    TooManyElements { limit: usize, byte: u64 },

    #[error("element {at} has more than the limit of {limit} attributes")]
    TooManyAttributes { limit: usize, at: Location },

    #[error("a value in {at} is longer than the limit of {limit} bytes")]
    ValueTooLong { limit: usize, at: Location },

    #[error("element {at} must contain only text, but it contains an element")]
    MixedContent { at: Location },

    #[error("required element `{element}` is missing from {at}")]
    MissingElement { element: &'static str, at: Location },

    #[error("element {at} appears more than once; the update document is ambiguous")]
    DuplicateElement { at: Location },

    #[error("required attribute `{attribute}` is missing from {at}")]
    MissingAttribute {
        attribute: &'static str,
        at: Location,
    },

    #[error("attribute `{attribute}` of {at} is `{value}`, which is not a GUID")]
    InvalidGuid {
        attribute: &'static str,
        value: String,
        at: Location,
    },

    #[error(
        "attribute `{attribute}` of {at} is `{value}`, which is not a non-negative integer in range"
    )]
    InvalidNumber {
        attribute: &'static str,
        value: String,
        at: Location,
    },

    #[error(
        "attribute `{attribute}` of {at} is `{value}`, which is not an ISO 8601 date-time \
         such as 2005-09-22T00:05:11.471Z"
    )]
    InvalidDate {
        attribute: &'static str,
        value: String,
        at: Location,
    },

    #[error("attribute `{attribute}` of {at} is `{value}`; expected {expected}")]
    InvalidValue {
        attribute: &'static str,
        value: String,
        expected: &'static str,
        at: Location,
    },

    #[error("the {algorithm} digest in {at} is invalid ({detail}): `{value}`")]
    InvalidDigest {
        algorithm: &'static str,
        value: String,
        detail: String,
        at: Location,
    },

    #[error(
        "the update has no `LocalizedProperties` entry with a title; every update needs at \
         least one title to be shown to people"
    )]
    NoLocalizedTitle,

    #[error(
        "category update {at} has no `CategoryInformation` with a `CategoryType` in its \
         `HandlerSpecificData`, so it cannot be placed in the category tree"
    )]
    MissingCategoryType { at: Location },
}

/// Parses one update XML document. `document` is kept byte for byte in the result.
///
/// Never panics, whatever the input; refuses it with a [`ParseError`] instead.
pub fn parse_update(document: &[u8], limits: &ParseLimits) -> Result<UpdateRevision, ParseError> {
    let mut revision = parse_without_document(document, limits)?;
    revision.document = document.to_vec();
    Ok(revision)
}

/// Like [`parse_update`], for a caller that owns the document: the bytes are moved into the
/// result instead of being copied. Results and errors are exactly those of [`parse_update`].
pub fn parse_update_owned(
    document: Vec<u8>,
    limits: &ParseLimits,
) -> Result<UpdateRevision, ParseError> {
    let mut revision = parse_without_document(&document, limits)?;
    revision.document = document;
    Ok(revision)
}

/// Everything [`parse_update`] does but keeping the document: the result's `document` is
/// left empty for the caller to fill.
fn parse_without_document(
    document: &[u8],
    limits: &ParseLimits,
) -> Result<UpdateRevision, ParseError> {
    if document.is_empty() {
        return Err(ParseError::Empty);
    }
    if document.len() > limits.max_document_bytes {
        return Err(ParseError::TooLarge {
            size: document.len(),
            limit: limits.max_document_bytes,
        });
    }
    let text = std::str::from_utf8(document).map_err(|e| match e.error_len() {
        // An incomplete sequence at the very end is a cut-off document, not another encoding.
        None => ParseError::Truncated {
            byte: e.valid_up_to() as u64,
            detail: "it ends inside a multi-byte UTF-8 character".to_owned(),
        },
        Some(_) => ParseError::NotUtf8 {
            byte: e.valid_up_to() as u64,
        },
    })?;

    let mut cursor = Cursor::new(text, limits);
    let root = cursor.root()?;
    if !(root.ns == Ns::Update && root.local == "Update") {
        return Err(ParseError::NotAnUpdateDocument {
            found: cursor.describe(&root),
        });
    }
    let mut draft = Draft::default();
    cursor.children(|cursor, child| draft.root_child(cursor, child))?;
    cursor.finish()?;
    draft.finish(&|| cursor.locate(&root))
}

/// The namespace of an element, reduced to what the parser distinguishes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ns {
    Update,
    Category,
    Other,
    None,
}

/// An element whose start tag has just been read. Names and attributes borrow the document
/// wherever they can, so reading an element allocates at most its attribute list.
#[derive(Debug)]
struct Element<'i> {
    ns: Ns,
    /// The local name, for matching and for error paths.
    local: &'i str,
    /// The qualified name as written, to resolve the namespace again for error messages.
    qname: &'i str,
    /// Attributes as written (qualified name, unescaped value), already checked for
    /// well-formedness and limits. A value borrows the document unless it had references
    /// to resolve.
    attributes: Vec<(&'i str, Cow<'i, str>)>,
    /// Nesting depth, the root being 1: with the cursor's stack of open elements it gives
    /// the element's path for error messages without building a path per element.
    depth: usize,
    byte: u64,
}

impl Element<'_> {
    /// The value of an unprefixed attribute. Update documents put every attribute this parser
    /// reads in no namespace, so a prefixed attribute of the same local name is someone
    /// else's.
    fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_ref())
    }

    fn is(&self, ns: Ns, local: &str) -> bool {
        self.ns == ns && self.local == local
    }
}

/// One step through the document.
enum Node<'i> {
    /// A start tag; an empty-element tag is an `Open` followed by a `Close`.
    Open(Element<'i>),
    /// Character data, CDATA or a resolved reference, inside the root element.
    Text(Cow<'i, str>),
    /// The end tag of the innermost open element.
    Close,
    /// The end of input, after the root element was closed.
    End,
}

/// The reader plus everything needed to enforce limits and locate errors.
struct Cursor<'i, 'l> {
    reader: NsReader<&'i [u8]>,
    /// The whole document, to look ahead when classifying a reader error.
    text: &'i str,
    limits: &'l ParseLimits,
    /// Local names of the open elements, root first.
    open: Vec<&'i str>,
    elements: usize,
    seen_root: bool,
    root_closed: bool,
    /// An empty-element tag was just handed out as `Open`; its `Close` comes next.
    pending_close: bool,
    /// Whether anything but an XML declaration has been read: a declaration is legal only
    /// as the very first thing.
    started: bool,
}

impl<'i, 'l> Cursor<'i, 'l> {
    fn new(text: &'i str, limits: &'l ParseLimits) -> Self {
        let mut reader = NsReader::from_str(text);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        Self {
            reader,
            text,
            limits,
            open: Vec::new(),
            elements: 0,
            seen_root: false,
            root_closed: false,
            started: false,
            pending_close: false,
        }
    }

    /// The next step. Every limit and well-formedness rule is enforced here.
    fn next(&mut self) -> Result<Node<'i>, ParseError> {
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
                    // `<a/>` is `<a></a>`: the close is handed out by the next call.
                    let element = self.open_element(ns, &start, byte)?;
                    self.pending_close = true;
                    return Ok(Node::Open(element));
                }
                Event::End(_) => return Ok(self.close()),
                Event::Text(text) => {
                    let text = text.xml10_content().map_err(|e| malformed(byte, e))?;
                    if self.open.is_empty() {
                        if !text.trim_matches(is_xml_space).is_empty() {
                            return Err(malformed(byte, "text outside the root element"));
                        }
                        continue;
                    }
                    return Ok(Node::Text(text));
                }
                Event::CData(data) => {
                    if self.open.is_empty() {
                        return Err(malformed(byte, "CDATA outside the root element"));
                    }
                    let text = data.xml10_content().map_err(|e| malformed(byte, e))?;
                    return Ok(Node::Text(text));
                }
                Event::GeneralRef(reference) => {
                    if self.open.is_empty() {
                        return Err(malformed(byte, "entity reference outside the root element"));
                    }
                    let resolved = reference
                        .resolve_char_ref()
                        .map_err(|e| malformed(byte, e))?;
                    if let Some(ch) = resolved {
                        return Ok(Node::Text(Cow::Owned(ch.to_string())));
                    }
                    let name = reference.decode().map_err(|e| malformed(byte, e))?;
                    return match resolve_predefined_entity(&name) {
                        Some(value) => Ok(Node::Text(Cow::Borrowed(value))),
                        None => Err(ParseError::UnknownEntity {
                            entity: excerpt(&name),
                            byte,
                        }),
                    };
                }
                Event::Comment(_) | Event::PI(_) => {}
                Event::Decl(decl) => {
                    if self.started {
                        return Err(malformed(
                            byte,
                            "XML declaration after the start of the document",
                        ));
                    }
                    self.started = true;
                    if let Some(encoding) = decl.encoding() {
                        let encoding = encoding.map_err(|e| malformed(byte, e))?;
                        if !encoding.eq_ignore_ascii_case(b"utf-8") {
                            return Err(ParseError::UnsupportedEncoding {
                                declared: excerpt(&String::from_utf8_lossy(&encoding)),
                            });
                        }
                    }
                }
                Event::DocType(_) => return Err(ParseError::DoctypeRefused { byte }),
                Event::Eof => {
                    if let Some((innermost, parents)) = self.open.split_last() {
                        return Err(ParseError::Truncated {
                            byte,
                            detail: format!(
                                "it ends inside element `{}` (open: `{}`)",
                                excerpt(innermost),
                                join_path(parents, innermost)
                            ),
                        });
                    }
                    if !self.seen_root {
                        return Err(ParseError::Truncated {
                            byte,
                            detail: "it ends before the root element".to_owned(),
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

    /// Checks a start tag against the limits and the namespace rules, and records it as open.
    fn open_element(
        &mut self,
        ns: Result<Ns, String>,
        start: &BytesStart<'_>,
        byte: u64,
    ) -> Result<Element<'i>, ParseError> {
        if self.root_closed {
            return Err(malformed(byte, "a second root element after `Update`"));
        }
        self.seen_root = true;
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return Err(ParseError::TooManyElements {
                limit: self.limits.max_elements,
                byte,
            });
        }
        let local = self.in_document(start.local_name().into_inner(), byte)?;
        let qname = self.in_document(start.name().into_inner(), byte)?;
        let depth = self.open.len() + 1;
        let here = || Location {
            path: join_path(&self.open, local),
            byte,
        };
        if depth > self.limits.max_depth {
            return Err(ParseError::TooDeep {
                limit: self.limits.max_depth,
                at: here(),
            });
        }
        let ns = ns.map_err(|prefix| {
            malformed(
                byte,
                format!("element `{qname}` uses undeclared namespace prefix `{prefix}`"),
            )
        })?;

        let mut attributes = Vec::new();
        for attribute in start.attributes() {
            let attribute = attribute
                .map_err(|e| malformed(byte, format!("bad attribute in element `{qname}`: {e}")))?;
            if attributes.len() >= self.limits.max_attributes_per_element {
                return Err(ParseError::TooManyAttributes {
                    limit: self.limits.max_attributes_per_element,
                    at: here(),
                });
            }
            let key = attribute.key;
            if key.as_namespace_binding().is_none()
                && key.prefix().is_some()
                && matches!(
                    self.reader.resolve_attribute(key).0,
                    ResolveResult::Unknown(_)
                )
            {
                return Err(malformed(
                    byte,
                    format!(
                        "attribute `{}` of element `{qname}` uses an undeclared namespace prefix",
                        String::from_utf8_lossy(key.as_ref())
                    ),
                ));
            }
            // The same as `decode_and_unescape_value`, without decoding text that is already
            // known to be UTF-8.
            let raw = self.in_document(&attribute.value, byte)?;
            let value = unescape(raw).map_err(|e| value_error(e.into(), byte))?;
            if value.len() > self.limits.max_text_bytes {
                return Err(ParseError::ValueTooLong {
                    limit: self.limits.max_text_bytes,
                    at: here(),
                });
            }
            attributes.push((self.in_document(key.into_inner(), byte)?, value));
        }

        self.open.push(local);
        Ok(Element {
            ns,
            local,
            qname,
            attributes,
            depth,
            byte,
        })
    }

    /// `part` of an event as the slice of the document it is. The reader borrows every event
    /// from the document, so this always succeeds; it saves copying names and values and
    /// checking their UTF-8 again. Should the reader ever hand out a copy, the document is
    /// refused rather than the parser panicking.
    fn in_document(&self, part: &[u8], byte: u64) -> Result<&'i str, ParseError> {
        let text = self.text;
        (part.as_ptr() as usize)
            .checked_sub(text.as_ptr() as usize)
            .and_then(|start| text.get(start..start.checked_add(part.len())?))
            .ok_or_else(|| {
                malformed(
                    byte,
                    "the XML reader returned text that is not in the document",
                )
            })
    }

    fn reader_error(&self, error: quick_xml::Error) -> ParseError {
        use quick_xml::errors::{IllFormedError, SyntaxError};
        let byte = self.reader.error_position();
        match error {
            // Every syntax error but this one means "end of input inside a construct".
            quick_xml::Error::Syntax(syntax)
                if !matches!(syntax, SyntaxError::InvalidBangMarkup) =>
            {
                ParseError::Truncated {
                    byte,
                    detail: syntax.to_string(),
                }
            }
            // The reader looks for the `;` up to the end of input. With markup still ahead, it
            // is a lone `&` in the middle of the document, not a document cut off in `&amp`.
            quick_xml::Error::IllFormed(IllFormedError::UnclosedReference) => {
                let rest = usize::try_from(byte)
                    .ok()
                    .and_then(|at| self.text.get(at..))
                    .unwrap_or_default();
                if rest.contains('<') {
                    malformed(
                        byte,
                        "`&` that does not start an entity or character reference",
                    )
                } else {
                    ParseError::Truncated {
                        byte,
                        detail: IllFormedError::UnclosedReference.to_string(),
                    }
                }
            }
            other => value_error(other, byte),
        }
    }

    /// Reads up to the first element: the root.
    fn root(&mut self) -> Result<Element<'i>, ParseError> {
        loop {
            match self.next()? {
                Node::Open(root) => return Ok(root),
                // Text, references and closes outside the root are refused by `next`.
                Node::Text(_) | Node::Close => {}
                Node::End => {
                    return Err(ParseError::Truncated {
                        byte: self.reader.buffer_position(),
                        detail: "it ends before the root element".to_owned(),
                    });
                }
            }
        }
    }

    /// Reads what follows the root element: only comments, processing instructions and
    /// whitespace may.
    fn finish(&mut self) -> Result<(), ParseError> {
        loop {
            if let Node::End = self.next()? {
                return Ok(());
            }
        }
    }

    /// Calls `each` for every child element of the element just opened, until its end tag.
    /// `each` must consume the child up to and including the child's end tag (for instance
    /// with [`Cursor::skip`]). Text between children is formatting and ignored.
    fn children(
        &mut self,
        mut each: impl FnMut(&mut Self, Element<'i>) -> Result<(), ParseError>,
    ) -> Result<(), ParseError> {
        loop {
            match self.next()? {
                Node::Open(child) => each(self, child)?,
                Node::Text(_) => {}
                Node::Close => return Ok(()),
                Node::End => return Err(self.ended_early()),
            }
        }
    }

    /// Consumes the element just opened, with everything in it.
    fn skip(&mut self) -> Result<(), ParseError> {
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

    /// The text content of the element just opened, up to its end tag.
    /// Borrows the document when the text is in one piece, as it usually is.
    fn text(&mut self, element: &Element<'_>) -> Result<Cow<'i, str>, ParseError> {
        let mut text = Cow::Borrowed("");
        loop {
            match self.next()? {
                Node::Text(part) => {
                    if text.len().saturating_add(part.len()) > self.limits.max_text_bytes {
                        return Err(ParseError::ValueTooLong {
                            limit: self.limits.max_text_bytes,
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
                    return Err(ParseError::MixedContent {
                        at: self.locate(element),
                    });
                }
                Node::Close => return Ok(text),
                Node::End => return Err(self.ended_early()),
            }
        }
    }

    /// The location of `element`, which must be open or a child of an open element (the
    /// parser only ever asks while inside the element's parent).
    fn locate(&self, element: &Element<'_>) -> Location {
        let parents = element.depth.saturating_sub(1).min(self.open.len());
        Location {
            path: join_path(&self.open[..parents], element.local),
            byte: element.byte,
        }
    }

    /// A human-readable name and namespace of `element`, for a wrong root element.
    fn describe(&self, element: &Element<'_>) -> String {
        let (resolved, _) = self.reader.resolve_element(QName(element.qname.as_bytes()));
        let namespace = match resolved {
            ResolveResult::Bound(Namespace(uri)) => {
                format!("in namespace {}", excerpt(&String::from_utf8_lossy(uri)))
            }
            _ => "in no namespace".to_owned(),
        };
        format!("`{}` {namespace}", excerpt(element.qname))
    }

    /// `next` reports end of input inside an element as truncation, so this is only reached
    /// if the cursor is misused; it still must not panic.
    fn ended_early(&self) -> ParseError {
        ParseError::Truncated {
            byte: self.reader.buffer_position(),
            detail: "it ends inside an element".to_owned(),
        }
    }
}

/// Maps the reader's namespace resolution to [`Ns`], or the undeclared prefix.
fn classify(resolved: ResolveResult<'_>) -> Result<Ns, String> {
    match resolved {
        ResolveResult::Bound(Namespace(uri)) if uri == UPDATE_NAMESPACE.as_bytes() => {
            Ok(Ns::Update)
        }
        ResolveResult::Bound(Namespace(uri)) if uri == CATEGORY_NAMESPACE.as_bytes() => {
            Ok(Ns::Category)
        }
        ResolveResult::Bound(_) => Ok(Ns::Other),
        ResolveResult::Unbound => Ok(Ns::None),
        ResolveResult::Unknown(prefix) => Err(excerpt(&String::from_utf8_lossy(&prefix))),
    }
}

fn value_error(error: quick_xml::Error, byte: u64) -> ParseError {
    match error {
        quick_xml::Error::Escape(EscapeError::UnrecognizedEntity(_, entity)) => {
            ParseError::UnknownEntity {
                entity: excerpt(&entity),
                byte,
            }
        }
        other => malformed(byte, other),
    }
}

fn malformed(byte: u64, detail: impl fmt::Display) -> ParseError {
    ParseError::Malformed {
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
    excerpt_long(path)
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Input-derived text quoted in an error message, shortened so a hostile document cannot
/// flood the logs.
fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Like [`excerpt`], for element paths, which are legitimately longer.
fn excerpt_long(text: String) -> String {
    const MAX_CHARS: usize = 400;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The `Properties` element, validated.
#[derive(Debug)]
struct Properties {
    update_type: UpdateType,
    publication_state: PublicationState,
    creation_date: Timestamp,
    default_language: String,
    msrc_severity: Option<MsrcSeverity>,
    kb_article: Option<String>,
    security_bulletin: Option<String>,
}

/// What has been read so far; [`Draft::finish`] checks that the required parts are there.
#[derive(Debug, Default)]
struct Draft {
    identity: Option<RevisionId>,
    properties: Option<Properties>,
    localized: Vec<LocalizedProperties>,
    prerequisites: Vec<Relationship>,
    bundled: Vec<Relationship>,
    superseded: Vec<UpdateRef>,
    files: Vec<UpdateFile>,
    /// The raw `CategoryType`, validated only once the update type is known: a non-category
    /// update's category data is not ours to judge.
    category_type: Option<(String, Location)>,
}

impl Draft {
    fn root_child(
        &mut self,
        cursor: &mut Cursor<'_, '_>,
        child: Element<'_>,
    ) -> Result<(), ParseError> {
        match (&child.ns, child.local) {
            (Ns::Update, "UpdateIdentity") => {
                if self.identity.is_some() {
                    return Err(ParseError::DuplicateElement {
                        at: cursor.locate(&child),
                    });
                }
                let at = || cursor.locate(&child);
                let update_id = guid_attr(&child, "UpdateID", &at)?;
                let revision = required(&child, "RevisionNumber", &at)
                    .and_then(|value| number(value, "RevisionNumber", &at))?;
                self.identity = Some(RevisionId {
                    update_id,
                    revision,
                });
                cursor.skip()
            }
            (Ns::Update, "Properties") => {
                if self.properties.is_some() {
                    return Err(ParseError::DuplicateElement {
                        at: cursor.locate(&child),
                    });
                }
                self.properties = Some(properties(cursor, &child)?);
                Ok(())
            }
            (Ns::Update, "LocalizedPropertiesCollection") => cursor.children(|cursor, entry| {
                if entry.is(Ns::Update, "LocalizedProperties") {
                    self.localized.push(localized(cursor, &entry)?);
                    Ok(())
                } else {
                    cursor.skip()
                }
            }),
            (Ns::Update, "Relationships") => {
                cursor.children(|cursor, list| match (&list.ns, list.local) {
                    (Ns::Update, "Prerequisites") => {
                        self.prerequisites.extend(relationships(cursor)?);
                        Ok(())
                    }
                    (Ns::Update, "BundledUpdates") => {
                        self.bundled.extend(relationships(cursor)?);
                        Ok(())
                    }
                    (Ns::Update, "SupersededUpdates") => {
                        self.superseded.extend(identities(cursor)?);
                        Ok(())
                    }
                    _ => cursor.skip(),
                })
            }
            (Ns::Update, "Files") => cursor.children(|cursor, file_element| {
                if file_element.is(Ns::Update, "File") {
                    self.files.push(file(cursor, &file_element)?);
                    Ok(())
                } else {
                    cursor.skip()
                }
            }),
            (Ns::Update, "HandlerSpecificData") => cursor.children(|cursor, data| {
                if data.is(Ns::Category, "CategoryInformation")
                    && let Some(value) = data.attr("CategoryType")
                {
                    self.category_type = Some((value.to_owned(), cursor.locate(&data)));
                }
                cursor.skip()
            }),
            _ => cursor.skip(),
        }
    }

    /// The checked revision, with an empty `document` for [`parse_update`] to fill.
    fn finish(self, root: &dyn Fn() -> Location) -> Result<UpdateRevision, ParseError> {
        let id = self.identity.ok_or_else(|| ParseError::MissingElement {
            element: "UpdateIdentity",
            at: root(),
        })?;
        let properties = self.properties.ok_or_else(|| ParseError::MissingElement {
            element: "Properties",
            at: root(),
        })?;
        if self.localized.is_empty() {
            return Err(ParseError::NoLocalizedTitle);
        }
        let category_type = match (properties.update_type, self.category_type) {
            (UpdateType::Category, None) => {
                return Err(ParseError::MissingCategoryType { at: root() });
            }
            (UpdateType::Category, Some((value, at))) => Some(category_type(&value, at)?),
            _ => None,
        };
        Ok(UpdateRevision {
            id,
            update_type: properties.update_type,
            publication_state: properties.publication_state,
            creation_date: properties.creation_date,
            default_language: properties.default_language,
            localized: self.localized,
            kb_article: properties.kb_article,
            security_bulletin: properties.security_bulletin,
            msrc_severity: properties.msrc_severity,
            category_type,
            prerequisites: self.prerequisites,
            bundled: self.bundled,
            superseded: self.superseded,
            files: self.files,
            document: Vec::new(),
        })
    }
}

fn properties(
    cursor: &mut Cursor<'_, '_>,
    element: &Element<'_>,
) -> Result<Properties, ParseError> {
    let at = || cursor.locate(element);
    let update_type = match required(element, "UpdateType", &at)? {
        "Software" => UpdateType::Software,
        "Driver" => UpdateType::Driver,
        "Category" => UpdateType::Category,
        "Detectoid" => UpdateType::Detectoid,
        other => {
            return Err(invalid(
                "UpdateType",
                other,
                "one of Software, Driver, Category, Detectoid",
                &at,
            ));
        }
    };
    let publication_state = match required(element, "PublicationState", &at)? {
        "Published" => PublicationState::Published,
        "Expired" => PublicationState::Expired,
        other => {
            return Err(invalid(
                "PublicationState",
                other,
                "Published or Expired",
                &at,
            ));
        }
    };
    let creation_date = date(required(element, "CreationDate", &at)?, "CreationDate", &at)?;
    let default_language = required(element, "DefaultPropertiesLanguage", &at)?;
    let default_language = default_language.trim_matches(is_xml_space);
    if default_language.is_empty() {
        return Err(invalid(
            "DefaultPropertiesLanguage",
            default_language,
            "a language tag such as `en`",
            &at,
        ));
    }
    let msrc_severity = match element.attr("MsrcSeverity") {
        None | Some("" | "Unspecified") => None,
        Some("Critical") => Some(MsrcSeverity::Critical),
        Some("Important") => Some(MsrcSeverity::Important),
        Some("Moderate") => Some(MsrcSeverity::Moderate),
        Some("Low") => Some(MsrcSeverity::Low),
        Some(other) => {
            return Err(invalid(
                "MsrcSeverity",
                other,
                "one of Critical, Important, Moderate, Low, Unspecified",
                &at,
            ));
        }
    };

    let mut properties = Properties {
        update_type,
        publication_state,
        creation_date,
        default_language: default_language.to_owned(),
        msrc_severity,
        kb_article: None,
        security_bulletin: None,
    };
    cursor.children(|cursor, child| {
        // The model keeps one KB article and one bulletin: the first of each wins.
        let slot = if child.is(Ns::Update, "KBArticleID") {
            &mut properties.kb_article
        } else if child.is(Ns::Update, "SecurityBulletinID") {
            &mut properties.security_bulletin
        } else {
            return cursor.skip();
        };
        let text = cursor.text(&child)?;
        let text = text.trim_matches(is_xml_space);
        if slot.is_none() && !text.is_empty() {
            *slot = Some(text.to_owned());
        }
        Ok(())
    })?;
    Ok(properties)
}

fn localized(
    cursor: &mut Cursor<'_, '_>,
    element: &Element<'_>,
) -> Result<LocalizedProperties, ParseError> {
    let mut language = None;
    let mut title = None;
    let mut description = None;
    cursor.children(|cursor, child| {
        let slot = if child.is(Ns::Update, "Language") {
            &mut language
        } else if child.is(Ns::Update, "Title") {
            &mut title
        } else if child.is(Ns::Update, "Description") {
            &mut description
        } else {
            return cursor.skip();
        };
        if slot.is_some() {
            return Err(ParseError::DuplicateElement {
                at: cursor.locate(&child),
            });
        }
        // Surrounding whitespace is the document's formatting, not part of the value.
        *slot = Some(cursor.text(&child)?.trim_matches(is_xml_space).to_owned());
        Ok(())
    })?;
    let present = |value: Option<String>| value.filter(|v| !v.is_empty());
    let missing = |name| ParseError::MissingElement {
        element: name,
        at: cursor.locate(element),
    };
    Ok(LocalizedProperties {
        language: present(language).ok_or_else(|| missing("Language"))?,
        title: present(title).ok_or_else(|| missing("Title"))?,
        description: present(description),
    })
}

/// The entries of `Prerequisites` or `BundledUpdates`.
fn relationships(cursor: &mut Cursor<'_, '_>) -> Result<Vec<Relationship>, ParseError> {
    let mut entries = Vec::new();
    cursor.children(|cursor, child| {
        if child.is(Ns::Update, "UpdateIdentity") {
            entries.push(Relationship::One(update_ref(cursor, &child)?));
            cursor.skip()
        } else if child.is(Ns::Update, "AtLeastOne") {
            let at = || cursor.locate(&child);
            let is_category = match child.attr("IsCategory") {
                None | Some("false" | "0") => false,
                Some("true" | "1") => true,
                Some(other) => return Err(invalid("IsCategory", other, "true or false", &at)),
            };
            let members = identities(cursor)?;
            if members.is_empty() {
                // "At least one of none" can never be met; it is a broken document.
                return Err(ParseError::MissingElement {
                    element: "UpdateIdentity",
                    at: cursor.locate(&child),
                });
            }
            entries.push(Relationship::AtLeastOne {
                is_category,
                members,
            });
            Ok(())
        } else {
            cursor.skip()
        }
    })?;
    Ok(entries)
}

/// The `UpdateIdentity` children of the element just opened.
fn identities(cursor: &mut Cursor<'_, '_>) -> Result<Vec<UpdateRef>, ParseError> {
    let mut refs = Vec::new();
    cursor.children(|cursor, child| {
        if child.is(Ns::Update, "UpdateIdentity") {
            refs.push(update_ref(cursor, &child)?);
        }
        cursor.skip()
    })?;
    Ok(refs)
}

/// A reference to another update; only reads attributes, the caller consumes the element.
fn update_ref(cursor: &Cursor<'_, '_>, element: &Element<'_>) -> Result<UpdateRef, ParseError> {
    let at = || cursor.locate(element);
    let update_id = guid_attr(element, "UpdateID", &at)?;
    let revision = element
        .attr("RevisionNumber")
        .map(|value| number(value, "RevisionNumber", &at))
        .transpose()?;
    Ok(UpdateRef {
        update_id,
        revision,
    })
}

fn file(cursor: &mut Cursor<'_, '_>, element: &Element<'_>) -> Result<UpdateFile, ParseError> {
    let at = || cursor.locate(element);
    let name = required(element, "FileName", &at)?;
    // The name becomes a file name on disk downstream: no paths, no control characters.
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
    {
        return Err(invalid(
            "FileName",
            name,
            "a plain file name without path separators or control characters",
            &at,
        ));
    }
    let size = required(element, "Size", &at).and_then(|value| number(value, "Size", &at))?;
    let modified = element
        .attr("Modified")
        .map(|value| date(value, "Modified", &at))
        .transpose()?;
    let algorithm_name = required(element, "DigestAlgorithm", &at)?;
    let algorithm = digest_algorithm(algorithm_name)
        .ok_or_else(|| invalid("DigestAlgorithm", algorithm_name, "SHA1 or SHA256", &at))?;
    let primary = digest(algorithm, required(element, "Digest", &at)?, &at)?;
    let mut digests = vec![primary];

    cursor.children(|cursor, child| {
        if !child.is(Ns::Update, "AdditionalDigest") {
            return cursor.skip();
        }
        let algorithm_name = required(&child, "Algorithm", &|| cursor.locate(&child))?;
        let value = cursor.text(&child)?;
        // An algorithm we do not know is a newer upstream's addition, not an error; the
        // primary digest still identifies the content.
        if let Some(algorithm) = digest_algorithm(algorithm_name) {
            digests.push(digest(
                algorithm,
                value.trim_matches(is_xml_space),
                &|| cursor.locate(&child),
            )?);
        }
        Ok(())
    })?;

    let download_url = download_url(name, &digests);
    Ok(UpdateFile {
        name: name.to_owned(),
        size,
        modified,
        digests,
        download_url,
    })
}

/// Where update servers serve content: addressed by SHA-1 (else SHA-256), upper-case hex,
/// in a directory named after the last two hex digits, keeping the file's extension.
fn download_url(name: &str, digests: &[FileDigest]) -> String {
    let by = |algorithm| digests.iter().find(|d| d.algorithm == algorithm);
    let Some(chosen) = by(DigestAlgorithm::Sha1).or_else(|| by(DigestAlgorithm::Sha256)) else {
        return String::new();
    };
    let mut hex = String::with_capacity(2 * chosen.value.len());
    for byte in &chosen.value {
        // Writing to a `String` cannot fail.
        let _ = write!(hex, "{byte:02X}");
    }
    let directory = hex.get(hex.len().saturating_sub(2)..).unwrap_or_default();
    format!("Content/{directory}/{hex}{}", extension(name))
}

/// The extension of `name` with its dot, when it is a plain one (letters and digits): the
/// URL must stay a simple relative path whatever the name holds.
fn extension(name: &str) -> &str {
    match name.rfind('.') {
        Some(dot) => {
            let extension = &name[dot..];
            let plain = extension.len() > 1
                && extension.len() <= 17
                && extension[1..].bytes().all(|b| b.is_ascii_alphanumeric());
            if plain { extension } else { "" }
        }
        None => "",
    }
}

fn digest_algorithm(name: &str) -> Option<DigestAlgorithm> {
    if name.eq_ignore_ascii_case("SHA1") {
        Some(DigestAlgorithm::Sha1)
    } else if name.eq_ignore_ascii_case("SHA256") {
        Some(DigestAlgorithm::Sha256)
    } else {
        None
    }
}

fn digest(
    algorithm: DigestAlgorithm,
    text: &str,
    at: &dyn Fn() -> Location,
) -> Result<FileDigest, ParseError> {
    let (label, expected_len) = match algorithm {
        DigestAlgorithm::Sha1 => ("SHA1", 20),
        DigestAlgorithm::Sha256 => ("SHA256", 32),
    };
    let error = |detail: String| ParseError::InvalidDigest {
        algorithm: label,
        value: excerpt(text),
        detail,
        at: at(),
    };
    let value = BASE64
        .decode(text)
        .map_err(|e| error(format!("not base64: {e}")))?;
    if value.len() != expected_len {
        return Err(error(format!(
            "{} bytes, expected {expected_len}",
            value.len()
        )));
    }
    Ok(FileDigest { algorithm, value })
}

fn category_type(value: &str, at: Location) -> Result<CategoryType, ParseError> {
    match value {
        "Company" => Ok(CategoryType::Company),
        "ProductFamily" => Ok(CategoryType::ProductFamily),
        "Product" => Ok(CategoryType::Product),
        "UpdateClassification" => Ok(CategoryType::UpdateClassification),
        other => Err(invalid(
            "CategoryType",
            other,
            "one of Company, ProductFamily, Product, UpdateClassification",
            &|| at.clone(),
        )),
    }
}

/// The value of a required attribute. Like the other checks below, it takes the element's
/// location as a function called only for an error: valid documents never build the path.
fn required<'e>(
    element: &'e Element<'_>,
    attribute: &'static str,
    at: &dyn Fn() -> Location,
) -> Result<&'e str, ParseError> {
    element
        .attr(attribute)
        .ok_or_else(|| ParseError::MissingAttribute {
            attribute,
            at: at(),
        })
}

fn guid_attr(
    element: &Element<'_>,
    attribute: &'static str,
    at: &dyn Fn() -> Location,
) -> Result<UpdateId, ParseError> {
    let value = required(element, attribute, at)?;
    UpdateId::from_str(value).map_err(|_| ParseError::InvalidGuid {
        attribute,
        value: excerpt(value),
        at: at(),
    })
}

/// A decimal number: digits only, because `u64::from_str` would also take a sign and a
/// document that writes `+5` is not one we understand.
fn number<T: FromStr>(
    value: &str,
    attribute: &'static str,
    at: &dyn Fn() -> Location,
) -> Result<T, ParseError> {
    let parsed = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse().ok()
    } else {
        None
    };
    parsed.ok_or_else(|| ParseError::InvalidNumber {
        attribute,
        value: excerpt(value),
        at: at(),
    })
}

fn date(
    value: &str,
    attribute: &'static str,
    at: &dyn Fn() -> Location,
) -> Result<Timestamp, ParseError> {
    Timestamp::parse_iso8601(value).ok_or_else(|| ParseError::InvalidDate {
        attribute,
        value: excerpt(value),
        at: at(),
    })
}

fn invalid(
    attribute: &'static str,
    value: &str,
    expected: &'static str,
    at: &dyn Fn() -> Location,
) -> ParseError {
    ParseError::InvalidValue {
        attribute,
        value: excerpt(value),
        expected,
        at: at(),
    }
}
