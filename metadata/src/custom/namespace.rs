//! A custom document stays within its vendor's namespace: its categories are the vendor's
//! own, under `Local publisher`, and an update names only its vendor's product and
//! Microsoft's classifications as the categories it belongs to.

use crate::model::{CategoryType, UpdateId, UpdateRevision, UpdateType};

use super::{CLASSIFICATIONS, LOCAL_PUBLISHER, product_category_id, vendor_category_id};

/// How a custom document leaves its vendor's namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    #[error(
        "category {id} is neither vendor `{vendor}`'s product family nor its product `{product}`: a publisher may add only its own vendor's categories"
    )]
    ForeignCategory {
        id: UpdateId,
        vendor: String,
        product: String,
    },
    #[error("category {id} of vendor `{vendor}` must be a {expected:?} under {parent}")]
    WrongCategoryShape {
        id: UpdateId,
        vendor: String,
        expected: CategoryType,
        parent: UpdateId,
    },
    #[error(
        "the update names category {category}, which is neither vendor `{vendor}`'s product `{product}` nor an update classification: custom updates belong only to their own vendor's products"
    )]
    ForeignMembership {
        category: UpdateId,
        vendor: String,
        product: String,
    },
    #[error(
        "the update does not name vendor `{vendor}`'s product `{product}` ({expected}) as a category it belongs to"
    )]
    NoProduct {
        vendor: String,
        product: String,
        expected: UpdateId,
    },
    #[error("the update names no update classification")]
    NoClassification,
    #[error("a custom update names no product (the seal's product is empty)")]
    EmptyProduct,
}

/// Checks that `revision` stays within `vendor`'s namespace, `product` being the product
/// its seal names (empty for the vendor's own category).
pub fn check_namespace(
    revision: &UpdateRevision,
    vendor: &str,
    product: &str,
) -> Result<(), NamespaceError> {
    let id = revision.id.update_id;
    let family = vendor_category_id(vendor);
    if revision.update_type == UpdateType::Category {
        let (expected, parent) = if id == family && product.is_empty() {
            (CategoryType::ProductFamily, LOCAL_PUBLISHER)
        } else if !product.is_empty() && id == product_category_id(vendor, product) {
            (CategoryType::Product, family)
        } else {
            return Err(NamespaceError::ForeignCategory {
                id,
                vendor: vendor.to_owned(),
                product: product.to_owned(),
            });
        };
        let parents: Vec<UpdateId> = revision.categories().collect();
        if revision.category_type != Some(expected) || parents != [parent] {
            return Err(NamespaceError::WrongCategoryShape {
                id,
                vendor: vendor.to_owned(),
                expected,
                parent,
            });
        }
        return Ok(());
    }
    if product.is_empty() {
        return Err(NamespaceError::EmptyProduct);
    }
    let own_product = product_category_id(vendor, product);
    let mut named_product = false;
    let mut named_classification = false;
    for category in revision.categories() {
        if category == own_product {
            named_product = true;
        } else if CLASSIFICATIONS.iter().any(|(c, _)| *c == category) {
            named_classification = true;
        } else {
            return Err(NamespaceError::ForeignMembership {
                category,
                vendor: vendor.to_owned(),
                product: product.to_owned(),
            });
        }
    }
    if !named_product {
        return Err(NamespaceError::NoProduct {
            vendor: vendor.to_owned(),
            product: product.to_owned(),
            expected: own_product,
        });
    }
    if !named_classification {
        return Err(NamespaceError::NoClassification);
    }
    Ok(())
}
