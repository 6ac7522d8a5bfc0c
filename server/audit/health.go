package audit

// Err returns the error that made the log refuse every write from now on
// (a failed fsync or checkpoint), or nil while it takes records: a broker
// reports it as not ready.
func (l *Log) Err() error { return l.failure() }
