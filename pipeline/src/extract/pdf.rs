//! PDF text extraction.
