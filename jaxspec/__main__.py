from jaxspec.cli import run

run()
