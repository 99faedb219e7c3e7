//! TODO(owner): sse
