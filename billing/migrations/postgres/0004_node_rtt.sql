-- Route intelligence (issue 15), mesh side: what each node measured at its last announce,
-- towards game target prefixes (kind 'target', key '203.0.113.0/24' or '2001:db8:1::/48')
-- and towards its mesh peers (kind 'peer', key = peer node id). Each announce replaces the
-- node's whole set; updated_at is when it was reported (clients get fresh rows only).
CREATE TABLE node_rtt (
    node_id       TEXT   NOT NULL REFERENCES nodes (id),
    kind          TEXT   NOT NULL,
    key           TEXT   NOT NULL,
    rtt_us        BIGINT NOT NULL,
    jitter_us     BIGINT NOT NULL,
    loss_permille BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (node_id, kind, key)
);
CREATE INDEX node_rtt_updated ON node_rtt (updated_at);
