-- Answers to access requests given through another broker than the one
-- that holds the request: the answering broker posts one here and
-- notifies keyhole_access_answers with the holder's replica name; the
-- holder applies it (recording it in its own audit chain) and writes the
-- result back.
CREATE TABLE keyhole_access_answers (
	id text PRIMARY KEY,
	replica text NOT NULL,   -- the broker that holds the request
	request text NOT NULL,   -- acr_…
	approve boolean NOT NULL,
	for_session boolean NOT NULL DEFAULT false,
	by_whom text NOT NULL,
	note text NOT NULL DEFAULT '',
	asked timestamptz NOT NULL DEFAULT now(),
	done boolean NOT NULL DEFAULT false,
	result text,             -- the request as answered (JSON)
	error text
);
CREATE INDEX keyhole_access_answers_pending ON keyhole_access_answers (replica) WHERE NOT done;
