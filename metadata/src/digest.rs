//! The catalog digest: an order-independent fingerprint of a set of revisions.
//!
//! Each revision contributes `SHA-256(update id ‖ revision ‖ SHA-256(document))`, read as a
//! 256-bit little-endian integer; the digest is their sum modulo 2^256. Addition commutes,
//! so the digest does not depend on the order revisions arrived in, and it updates in O(1)
//! when one revision is added or removed. Two stores holding the same revisions with the
//! same bytes have equal digests; a single changed byte in any document changes it.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::model::RevisionId;

/// SHA-256 of one update document.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn of(document: &[u8]) -> Self {
        Self(Sha256::digest(document).into())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// The digest of a whole catalog (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct CatalogDigest(pub [u8; 32]);

impl CatalogDigest {
    /// The digest of an empty store.
    pub const EMPTY: Self = Self([0; 32]);

    /// The term one revision contributes.
    pub fn element(id: RevisionId, content: ContentHash) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(id.update_id.as_bytes());
        hasher.update(id.revision.to_be_bytes());
        hasher.update(content.0);
        hasher.finalize().into()
    }

    pub fn add(&mut self, id: RevisionId, content: ContentHash) {
        let term = Self::element(id, content);
        let mut carry = 0u16;
        for (acc, byte) in self.0.iter_mut().zip(term) {
            let sum = u16::from(*acc) + u16::from(byte) + carry;
            *acc = sum as u8;
            carry = sum >> 8;
        }
    }

    pub fn remove(&mut self, id: RevisionId, content: ContentHash) {
        let term = Self::element(id, content);
        let mut borrow = 0i16;
        for (acc, byte) in self.0.iter_mut().zip(term) {
            let mut diff = i16::from(*acc) - i16::from(byte) - borrow;
            borrow = 0;
            if diff < 0 {
                diff += 256;
                borrow = 1;
            }
            *acc = diff as u8;
        }
    }

    /// The digest of a set of revisions, computed from scratch.
    pub fn of<I: IntoIterator<Item = (RevisionId, ContentHash)>>(items: I) -> Self {
        let mut digest = Self::EMPTY;
        for (id, content) in items {
            digest.add(id, content);
        }
        digest
    }

    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for byte in bytes {
        write!(f, "{byte:02x}")?;
    }
    Ok(())
}

impl fmt::Display for CatalogDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for CatalogDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UpdateId;

    fn rev(n: u8, revision: u32) -> RevisionId {
        RevisionId {
            update_id: UpdateId::from_bytes([n; 16]),
            revision,
        }
    }

    #[test]
    fn order_does_not_matter_and_remove_undoes_add() {
        let items: Vec<_> = (0..50u8)
            .map(|n| (rev(n, u32::from(n) + 100), ContentHash::of(&[n; 7])))
            .collect();
        let forward = CatalogDigest::of(items.iter().copied());
        let backward = CatalogDigest::of(items.iter().rev().copied());
        assert_eq!(forward, backward);
        assert_ne!(forward, CatalogDigest::EMPTY);

        let mut digest = forward;
        for (id, content) in &items {
            digest.remove(*id, *content);
        }
        assert_eq!(digest, CatalogDigest::EMPTY);
    }

    #[test]
    fn one_changed_byte_changes_the_digest() {
        let a = CatalogDigest::of([(rev(1, 100), ContentHash::of(b"<a/>"))]);
        let b = CatalogDigest::of([(rev(1, 100), ContentHash::of(b"<b/>"))]);
        let c = CatalogDigest::of([(rev(1, 101), ContentHash::of(b"<a/>"))]);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
