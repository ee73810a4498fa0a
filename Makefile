# The two commands of the README. Both install what they need first.

.PHONY: run test

# run starts a development sigild on 127.0.0.1:8380 with a throwaway SoftHSM
# token under .dev/ and the Postgres at $SIGIL_DATABASE_URL or 127.0.0.1:5432.
run:
	@./deploy/dev/run.sh

# test runs every check and test against real SoftHSM and Postgres.
test:
	@./deploy/dev/test.sh
