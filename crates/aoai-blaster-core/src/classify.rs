//! TODO(owner): classify
