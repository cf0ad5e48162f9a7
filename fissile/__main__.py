from fissile.cli import main

main()
