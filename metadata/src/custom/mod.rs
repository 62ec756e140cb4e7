//! Custom updates (S6): what a local publisher adds to the catalog, and how every node tells
//! a genuine one from a forgery.
//!
//! Custom updates sit in a category tree of their own under the built-in company
//! **Local publisher** ([`LOCAL_PUBLISHER`], the same document at every node): one product
//! family per vendor ([`vendor_category_id`]) and one product per vendor and product name
//! ([`product_category_id`]). Both ids are derived from the names, so a vendor's namespace is
//! a property of the ids themselves and every node checks it without a lookup
//! ([`check_namespace`]). Choosing the product `Local publisher` in the sync settings selects
//! that whole tree.
//!
//! Every custom document, category or update, carries a [`Seal`]: the publisher's signature
//! over the rest of the document, its certificate, and the catalog version at which the top
//! site accepted it ([`seal`]). [`describe`] writes the documents from a short description.

pub mod describe;
mod namespace;
mod seal;

use uuid::Uuid;

use crate::model::UpdateId;

pub use namespace::{NamespaceError, check_namespace};
pub use seal::{Acceptance, SEAL_ALGORITHM, Seal, SealError, seal, sealed_message, unseal};

/// The built-in company every custom update sits under; the product selector
/// `Local publisher` names it.
pub const LOCAL_PUBLISHER: UpdateId =
    UpdateId::from_bytes(*Uuid::from_u128(0x7c40e8c2_01ae_47f5_9af2_6e75a0582518).as_bytes());

/// Its title.
pub const LOCAL_PUBLISHER_NAME: &str = "Local publisher";

/// The `PublisherID` written into custom documents.
pub const LOCAL_PUBLISHER_ID: &str = "9a3f5d7e-2b41-4c8d-8e6f-0d1c2b3a4f5e";

/// The name space of derived category ids (a fixed, made-up UUID).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x5a7e_5c0d_7b1e_4c22_9d3f_0e6a_41b8_c915);

/// The product family of `vendor`'s products, under [`LOCAL_PUBLISHER`].
pub fn vendor_category_id(vendor: &str) -> UpdateId {
    derived(&["vendor", vendor])
}

/// The product `product` of `vendor`, under [`vendor_category_id`].
pub fn product_category_id(vendor: &str, product: &str) -> UpdateId {
    derived(&["product", vendor, product])
}

fn derived(parts: &[&str]) -> UpdateId {
    // Parts are joined with a NUL, which no name may hold, so distinct lists never collide.
    let name = parts.join("\0");
    UpdateId::from_bytes(*Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).as_bytes())
}

/// The update classifications custom updates may belong to: Microsoft's, by id and name.
pub const CLASSIFICATIONS: [(UpdateId, &str); 9] = [
    (
        classification(0xe6cf1350_c01b_414d_a61f_263d14d133b4),
        "Critical Updates",
    ),
    (
        classification(0x0fa1201d_4330_4fa8_8ae9_b877473b6441),
        "Security Updates",
    ),
    (
        classification(0xe0789628_ce08_4437_be74_2495b842f43b),
        "Definition Updates",
    ),
    (
        classification(0xcd5ffd1e_e932_4e3a_bf74_18bf0b1bbd83),
        "Updates",
    ),
    (
        classification(0x68c5b0a3_d1a6_4553_ae49_01d3a7827828),
        "Service Packs",
    ),
    (
        classification(0x28bc880e_0592_4cbf_8f95_c79b17911d5f),
        "Update Rollups",
    ),
    (
        classification(0xb54e7d24_7add_428f_8b75_90a396fa584f),
        "Feature Packs",
    ),
    (
        classification(0xb4832bd8_e735_4761_8daf_37f882276dab),
        "Tools",
    ),
    (
        classification(0xebfc1fc5_71a4_4f7b_9aca_3b9a503104a0),
        "Drivers",
    ),
];

const fn classification(id: u128) -> UpdateId {
    UpdateId::from_bytes(*Uuid::from_u128(id).as_bytes())
}

/// The classification named `text` (case-insensitive) or with that id.
pub fn classification_named(text: &str) -> Option<UpdateId> {
    let text = text.trim();
    let by_id = text.parse::<UpdateId>().ok();
    CLASSIFICATIONS
        .iter()
        .find(|(id, name)| Some(*id) == by_id || name.eq_ignore_ascii_case(text))
        .map(|(id, _)| *id)
}

/// How operators and messages name a publisher key: the first 8 bytes of the SHA-256 of
/// its SubjectPublicKeyInfo (DER), hex.
pub fn key_id(public_key: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(public_key)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The built-in `Local publisher` company document: the same bytes at every node, so it
/// needs no signature (a node recognises it by its content).
pub fn local_publisher_document() -> Vec<u8> {
    describe::render_category(
        LOCAL_PUBLISHER,
        describe::Category::Company,
        LOCAL_PUBLISHER_NAME,
        None,
        crate::Timestamp(1_173_118_960_120),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{ParseLimits, parse_update};

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(vendor_category_id("Contoso"), vendor_category_id("Contoso"));
        assert_ne!(vendor_category_id("Contoso"), vendor_category_id("contoso"));
        assert_ne!(
            product_category_id("Contoso", "App"),
            product_category_id("Contoso App", "")
        );
        assert_ne!(vendor_category_id("x"), product_category_id("x", ""));
    }

    #[test]
    fn the_built_in_company_parses_as_the_local_publisher() {
        let parsed = parse_update(&local_publisher_document(), &ParseLimits::default()).unwrap();
        assert_eq!(parsed.id.update_id, LOCAL_PUBLISHER);
        assert_eq!(parsed.title(), LOCAL_PUBLISHER_NAME);
        assert_eq!(parsed.category_type, Some(crate::CategoryType::Company));
    }

    #[test]
    fn classifications_resolve_by_name_or_id() {
        assert_eq!(
            classification_named("security updates"),
            Some(CLASSIFICATIONS[1].0)
        );
        assert_eq!(
            classification_named("0fa1201d-4330-4fa8-8ae9-b877473b6441"),
            Some(CLASSIFICATIONS[1].0)
        );
        assert_eq!(classification_named("Windows 10"), None);
    }
}
