package postgres

// AcquiredConns returns the number of the store's pooled connections in use,
// for tests that check that a method gave its connection back.
func AcquiredConns(s *Store) int32 {
	return s.pool.Stat().AcquiredConns()
}
