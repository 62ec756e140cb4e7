//! Catalog generator (in progress).
