from clipsam.cli.app import main

main()
