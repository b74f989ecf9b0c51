-- AlterTable
ALTER TABLE "SourceRelease" ADD COLUMN     "defaultSourceSetName" TEXT;
