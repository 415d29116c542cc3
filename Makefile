# Every target calls the script of the same name in scripts/, so `make test` and
# `./scripts/test` do exactly the same thing. Pass arguments with ARGS="...".

.PHONY: demo test lint bench bootstrap ci

demo:
	./scripts/demo $(ARGS)

test:
	./scripts/test $(ARGS)

lint:
	./scripts/lint

bench:
	./scripts/bench $(ARGS)

bootstrap:
	./scripts/bootstrap

ci:
	bash .ci/run
