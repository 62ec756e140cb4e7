//! Parser for update XML documents (in progress).
use crate::model::UpdateRevision;

#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    pub max_document_bytes: usize,
    pub max_depth: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_document_bytes: 4 << 20,
            max_depth: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not implemented")]
    Unimplemented,
}

pub fn parse_update(_document: &[u8], _limits: &ParseLimits) -> Result<UpdateRevision, ParseError> {
    Err(ParseError::Unimplemented)
}
