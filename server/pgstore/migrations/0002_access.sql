-- Access requests, kept by the broker (replica) that holds them: each
-- record is MAC'd JSON, exactly as the broker's request file keeps it.
CREATE TABLE keyhole_access (
	replica text NOT NULL,
	id text NOT NULL,
	record text NOT NULL,
	PRIMARY KEY (replica, id)
);
