//! Redis broker: PSUBSCRIBE pattern -> hub, PUBLISH from this node.
