//! Shared library of the sample services.
