//! Cutting extracted text into chunks of bounded size.
