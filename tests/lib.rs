//! Workspace-level tests (see the `[[test]]` targets next to this file). Nothing to export:
//! each test links the objectives it uses with `use … as _`.
