//! Shared by the tests: the recorded exchanges and update documents (copied into
//! `tests/fixtures/`, never read from outside the crate), and a small XML tree for comparing
//! request bodies by content rather than by bytes.
#![allow(dead_code)]

use std::path::PathBuf;

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};

pub fn fixture(relative: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One recorded request/response pair.
pub struct Exchange {
    pub number: u32,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    pub path: String,
    pub soap_action: String,
    pub status: u16,
}

pub fn exchange(number: u32) -> Exchange {
    let dir = format!("wsusss/exchanges/{number:06}");
    let meta: serde_json::Value =
        serde_json::from_slice(&fixture(&format!("{dir}/meta.json"))).unwrap();
    Exchange {
        number,
        request_body: fixture(&format!("{dir}/request.body")),
        response_body: fixture(&format!("{dir}/response.body")),
        path: meta["path"].as_str().unwrap().to_owned(),
        soap_action: meta["soap_action"].as_str().unwrap().to_owned(),
        status: u16::try_from(meta["status"].as_u64().unwrap()).unwrap(),
    }
}

/// The update document served in an exchange, as the shared fixture has it.
pub fn update_xml(name: &str) -> Vec<u8> {
    fixture(&format!("update-xml/{name}"))
}

/// An element as the tests compare it: namespace URI, local name, text, children. Prefixes,
/// attribute order, whitespace between elements and the XML declaration do not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlNode {
    pub namespace: Option<String>,
    pub name: String,
    pub text: String,
    pub children: Vec<XmlNode>,
}

impl XmlNode {
    pub fn parse(body: &[u8]) -> XmlNode {
        let text = std::str::from_utf8(body).unwrap();
        let mut reader = NsReader::from_str(text);
        let mut stack: Vec<XmlNode> = Vec::new();
        loop {
            let (ns, event) = reader.read_resolved_event().unwrap();
            let namespace = match ns {
                ResolveResult::Bound(Namespace(uri)) => {
                    Some(String::from_utf8(uri.to_vec()).unwrap())
                }
                ResolveResult::Unbound => None,
                ResolveResult::Unknown(p) => panic!("unknown prefix {p:?}"),
            };
            match event {
                Event::Start(start) => stack.push(XmlNode {
                    namespace,
                    name: String::from_utf8(start.local_name().as_ref().to_vec()).unwrap(),
                    text: String::new(),
                    children: Vec::new(),
                }),
                Event::Empty(start) => {
                    let node = XmlNode {
                        namespace,
                        name: String::from_utf8(start.local_name().as_ref().to_vec()).unwrap(),
                        text: String::new(),
                        children: Vec::new(),
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => return node,
                    }
                }
                Event::End(_) => {
                    let mut node = stack.pop().unwrap();
                    node.text = node.text.trim().to_owned();
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => return node,
                    }
                }
                Event::Text(t) => {
                    if let Some(open) = stack.last_mut() {
                        open.text.push_str(&t.xml10_content().unwrap());
                    }
                }
                Event::GeneralRef(r) => {
                    let name = r.decode().unwrap();
                    let value = quick_xml::escape::resolve_predefined_entity(&name).unwrap();
                    stack.last_mut().unwrap().text.push_str(value);
                }
                Event::Eof => panic!("no root element"),
                _ => {}
            }
        }
    }

    /// The operation element inside `Envelope/Body`.
    pub fn operation(&self) -> &XmlNode {
        assert_eq!(self.name, "Envelope");
        let body = self.children.iter().find(|c| c.name == "Body").unwrap();
        assert_eq!(body.children.len(), 1);
        &body.children[0]
    }

    pub fn child(&self, name: &str) -> Option<&XmlNode> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Removes the descendants named `name`, for comparisons that leave one element out.
    pub fn without(mut self, name: &str) -> XmlNode {
        self.children.retain(|c| c.name != name);
        self.children = self.children.into_iter().map(|c| c.without(name)).collect();
        self
    }
}
