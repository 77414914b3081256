//! Turning one input file into text, per format.

pub mod pdf;
