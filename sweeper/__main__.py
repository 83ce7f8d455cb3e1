from sweeper.cli.main import main

main()
