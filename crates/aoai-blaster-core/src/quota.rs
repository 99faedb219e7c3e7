//! TODO(owner): quota
