//! placeholder until the TRL fixture exists
