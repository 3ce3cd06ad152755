//! Test fixtures shared by the workspace's integration tests.
