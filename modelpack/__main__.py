from modelpack.cli import main

main()
